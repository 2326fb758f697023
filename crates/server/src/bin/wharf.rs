//! `wharf`: the command-line client of `wharfd`.

fn main() -> std::process::ExitCode {
    wharf_server::cli::main()
}
