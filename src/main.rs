#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    vellum::cli::main()
}
