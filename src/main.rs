fn main() {
    std::process::exit(regop::app::cli::main());
}
