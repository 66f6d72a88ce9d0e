fn main() -> std::process::ExitCode {
    vm_catalog::cli::main()
}
