//! Brother mode: the host's LXD socket inside the system container, on a dedicated profile.
