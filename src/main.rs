fn main() {
    std::process::exit(regop::cli::main());
}
