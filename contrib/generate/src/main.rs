//! Refreshes contrib/completions and contrib/man.

fn main() -> std::io::Result<()> {
    let out = vm_catalog_generate::contrib_dir();
    vm_catalog_generate::generate(&out)?;
    println!(
        "wrote {}/completions and {}/man",
        out.display(),
        out.display()
    );
    Ok(())
}
