fn main() -> anyhow::Result<()> {
    vellum::cli::main()
}
