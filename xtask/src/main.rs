//! Developer and CI automation for gbo.

fn main() {
    println!("xtask: not yet implemented");
}
