//! fail2ban filters and jails in containers and on the host.
