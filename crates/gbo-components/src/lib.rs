//! The gbo catalogue: what each General Bots service is (image, packages or pinned artifacts, mounts, ports,
//! limits, config files, health checks) and the files it renders. Pure data and rendering: no I/O, no async.
