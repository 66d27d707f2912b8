//! An executable that forgot `mp::init()`: started as a child, its `main` runs
//! from the top and exits without ever answering the parent.

fn main() {
    println!("no-init: main ran without mp::init()");
}
