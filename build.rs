//! Links the binaries as position-dependent executables. In a pipe process (pdns runs one
//! per thread, each for as long as pdns) a position-independent binary's relocated data
//! is private, dirty memory in every copy; resolved at link time it stays clean and is
//! shared. The library and the tests are built as usual.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
