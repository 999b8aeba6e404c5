//! `gbo`: deploy and operate the General Bots stack on LXD.

fn main() {
    println!("gbo: not yet implemented");
}
