#!/bin/bash
# STAND-IN for `zfs` in gbo's tests: records argv and answers like OpenZFS 2.2. Not ZFS.
printf '%s\n' "$*" >> "$ZFS_STANDIN_LOG"
if [ -n "$ZFS_STANDIN_SLEEP" ]; then sleep "$ZFS_STANDIN_SLEEP"; fi
case "$1" in
  version) echo "zfs-2.2.2-standin"; echo "zfs-kmod-2.2.2-standin"; exit 0 ;;
  list)
    if [[ " $* " == *" -t snapshot "* ]]; then cat "$ZFS_STANDIN_LIST"; else printf 'tank\t1.5G\t8.2G\t96K\n'; fi
    exit 0 ;;
  snapshot) exit 0 ;;
  destroy)
    arg="${@: -1}"
    ds="${arg%@*}"; items="${arg#*@}"
    IFS=',' read -ra parts <<< "$items"
    if [ -n "$ZFS_STANDIN_MAX_ITEMS" ] && [ "${#parts[@]}" -gt "$ZFS_STANDIN_MAX_ITEMS" ]; then
      echo "internal error: Argument list too long" >&2; exit 1
    fi
    failed=0; count=0
    for p in "${parts[@]}"; do
      for h in ${ZFS_STANDIN_HELD//,/ }; do
        if [ "$ds@$p" = "$h" ]; then echo "cannot destroy snapshot $h: dataset is busy" >&2; failed=1; fi
      done
      if [[ "$p" == *%* ]]; then
        a="${p%%\%*}"; b="${p##*%}"; a="${a//[!0-9]/}"; b="${b//[!0-9]/}"
        count=$((count + 10#$b - 10#$a + 1))
      else
        count=$((count + 1))
      fi
    done
    if [ $failed = 1 ]; then exit 1; fi
    if [[ " $* " == *" -n "* ]]; then echo "would destroy $count snapshots"; fi
    printf 'reclaim\t%d\n' $((count * 1024))
    exit 0 ;;
  *) echo "stand-in: unsupported $1" >&2; exit 2 ;;
esac
