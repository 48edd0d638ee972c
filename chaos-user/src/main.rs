fn main() {
    println!("{}", chaos_user::EBPF_OBJECT.len());
}
