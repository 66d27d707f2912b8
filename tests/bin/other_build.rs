//! A different executable that calls `mp::init()`: used by the same-build test.
//! When started as a child of another binary, its fingerprint differs, so it
//! must refuse the work and exit.

fn main() {
    multiprocess::init();
    println!("other-build: started directly, nothing to do");
}
