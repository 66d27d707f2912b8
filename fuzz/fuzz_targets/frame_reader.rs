#![no_main]
//! Fuzzes `multiprocess::__fuzz::frame_reader`: see its doc for what the bytes mean
//! and the invariants it asserts (same frames however the stream is split; memory
//! bounded by the bytes fed, whatever a header declares).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiprocess::__fuzz::frame_reader(data);
});
