fn main() {
    kd_build_support::emit_libtorch_link_args();
}
