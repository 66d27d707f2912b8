//! An executable that forgot `mp::init()` and then blocks: the parent must give
//! up on it after the start timeout instead of waiting forever.

fn main() {
    std::thread::sleep(std::time::Duration::from_secs(3600));
}
