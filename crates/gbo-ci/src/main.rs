//! `gbo-ci`: safe botserver deploys over SSH, Forgejo workflows and runner upkeep.

fn main() {
    println!("gbo-ci: not yet implemented");
}
