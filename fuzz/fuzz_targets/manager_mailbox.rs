#![no_main]
//! Fuzzes `multiprocess::__fuzz::manager_mailbox`: see its doc for what the bytes mean.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiprocess::__fuzz::manager_mailbox(data);
});
