//! Compiles the C half of liboffheap (see c/thread_state.c for why it is C).
fn main() {
    println!("cargo:rerun-if-changed=c/thread_state.c");
    cc::Build::new()
        .file("c/thread_state.c")
        .flag("-fPIC")
        .flag_if_supported("-ftls-model=initial-exec")
        .opt_level(2)
        .compile("offheap_shim");
}
