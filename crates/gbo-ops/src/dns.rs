//! CoreDNS: render and apply the Corefile with the ACL, reload by SIGHUP.
