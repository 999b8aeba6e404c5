#!/bin/bash
# STAND-IN for `zfs` in gbo's tests: records argv and answers like OpenZFS 2.2. Not ZFS.
#
# $ZFS_STANDIN_LIST holds one snapshot per line: name<TAB>createtxg<TAB>creation<TAB>used.
# `list -t snapshot` prints the columns asked for with -o, sorted by the -s column, limited to the -r datasets.
# `destroy` expands each item the way OpenZFS does: `a%b` is every snapshot of the dataset whose createtxg lies
# between a's and b's (inclusive; a must not be newer than b), a plain name is that snapshot. What a real destroy
# would remove is appended to $ZFS_STANDIN_LOG.destroyed and removed from the list.
# Settings: ZFS_STANDIN_MAX_ITEMS (more comma items fail with "Argument list too long"), ZFS_STANDIN_HELD (comma
# list of snapshots that fail with "dataset is busy"), ZFS_STANDIN_SLEEP (seconds per call).
printf '%s\n' "$*" >> "$ZFS_STANDIN_LOG"
if [ -n "$ZFS_STANDIN_SLEEP" ]; then sleep "$ZFS_STANDIN_SLEEP"; fi
TAB=$'\t'
case "$1" in
  version) echo "zfs-2.2.2-standin"; echo "zfs-kmod-2.2.2-standin"; exit 0 ;;
  list)
    if [[ " $* " != *" -t snapshot "* ]]; then printf 'tank\t1.5G\t8.2G\t96K\n'; exit 0; fi
    shift
    cols=name; sortcol=""; roots=""
    while [ $# -gt 0 ]; do
      case "$1" in
        -o) cols="$2"; shift 2 ;;
        -s) sortcol="$2"; shift 2 ;;
        -t) shift 2 ;;
        -*) shift ;;
        *) roots="$roots $1"; shift ;;
      esac
    done
    case "$sortcol" in
      createtxg) sorter=(sort -s -t "$TAB" -k2,2n) ;;
      creation) sorter=(sort -s -t "$TAB" -k3,3n) ;;
      used) sorter=(sort -s -t "$TAB" -k4,4n) ;;
      name) sorter=(sort -s -t "$TAB" -k1,1) ;;
      *) sorter=(cat) ;;
    esac
    "${sorter[@]}" "$ZFS_STANDIN_LIST" | awk -F'\t' -v OFS='\t' -v cols="$cols" -v roots="$roots" '
      BEGIN { n = split(cols, c, ","); nr = split(roots, r, " ")
              col["name"] = 1; col["createtxg"] = 2; col["creation"] = 3; col["used"] = 4 }
      {
        ds = $1; sub(/@.*/, "", ds); keep = (nr == 0)
        for (i = 1; i <= nr; i++) if (ds == r[i] || index(ds, r[i] "/") == 1) keep = 1
        if (!keep) next
        line = $(col[c[1]])
        for (i = 2; i <= n; i++) line = line OFS $(col[c[i]])
        print line
      }'
    exit 0 ;;
  snapshot) exit 0 ;;
  destroy)
    dry=0
    for a in "$@"; do if [ "$a" = "-n" ]; then dry=1; fi; done
    arg="${@: -1}"
    ds="${arg%@*}"; items="${arg#*@}"
    IFS=',' read -ra parts <<< "$items"
    if [ -n "$ZFS_STANDIN_MAX_ITEMS" ] && [ "${#parts[@]}" -gt "$ZFS_STANDIN_MAX_ITEMS" ]; then
      echo "internal error: Argument list too long" >&2; exit 1
    fi
    # Expand the items over the dataset's snapshots in createtxg order.
    expanded=$(sort -s -t "$TAB" -k2,2n "$ZFS_STANDIN_LIST" | awk -F'\t' -v ds="$ds" -v items="$items" '
      BEGIN { n = split(items, it, ",") }
      { d = $1; s = $1; sub(/@.*/, "", d); sub(/^[^@]*@/, "", s)
        if (d == ds) { txg[s] = $2 + 0; names[++count] = s } }
      END {
        for (i = 1; i <= n; i++) {
          if (index(it[i], "%") > 0) {
            a = it[i]; b = it[i]; sub(/%.*/, "", a); sub(/^[^%]*%/, "", b)
            if (!(a in txg) || !(b in txg)) { print "ERROR could not find snapshot " ds "@" a " or " ds "@" b; exit }
            if (txg[a] > txg[b]) { print "ERROR \x27" ds "@" a "\x27 is newer than \x27" ds "@" b "\x27"; exit }
            for (j = 1; j <= count; j++) if (txg[names[j]] >= txg[a] && txg[names[j]] <= txg[b]) print ds "@" names[j]
          } else if (it[i] in txg) {
            print ds "@" it[i]
          }
        }
      }' | awk '!seen[$0]++')
    if [[ "$expanded" == ERROR* ]]; then echo "cannot destroy snapshots: ${expanded#ERROR }" >&2; exit 1; fi
    failed=0; count=0
    while IFS= read -r snap; do
      [ -z "$snap" ] && continue
      count=$((count + 1))
      for h in ${ZFS_STANDIN_HELD//,/ }; do
        if [ "$snap" = "$h" ]; then echo "cannot destroy snapshot $h: dataset is busy" >&2; failed=1; fi
      done
    done <<< "$expanded"
    if [ $failed = 1 ]; then exit 1; fi
    if [ -n "$expanded" ]; then
      while IFS= read -r snap; do printf 'destroy\t%s\n' "$snap"; done <<< "$expanded"
    fi
    printf 'reclaim\t%d\n' $((count * 1024))
    if [ $dry = 0 ] && [ -n "$expanded" ]; then
      printf '%s\n' "$expanded" >> "$ZFS_STANDIN_LOG.destroyed"
      awk -F'\t' 'NR == FNR { gone[$0] = 1; next } !($1 in gone)' <(printf '%s\n' "$expanded") "$ZFS_STANDIN_LIST" \
        > "$ZFS_STANDIN_LIST.new" && mv "$ZFS_STANDIN_LIST.new" "$ZFS_STANDIN_LIST"
    fi
    exit 0 ;;
  *) echo "stand-in: unsupported $1" >&2; exit 2 ;;
esac
