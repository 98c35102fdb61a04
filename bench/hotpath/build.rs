//! Exports the binary's global symbols dynamically, so that they survive the
//! workspace's `strip = true` release profile: valgrind reads `.dynsym`, and
//! `--toggle-collect=hotpath_requests_loop` (and callgrind's per-function
//! report of the `proxy_*` entry points and host mocks) then works on the
//! plain `cargo build --release` binary.

fn main() {
    let target = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target == "linux" {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic");
    }
}
