//! Generates shell completions (bash, zsh, fish) and man pages for
//! `vm-catalogd` and `vm-catalog` from their clap definitions.
//!
//! `cargo run -p vm-catalog-generate` refreshes `contrib/completions/` and
//! `contrib/man/`; a test fails when they are out of date.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The commands to document: `vm-catalogd` and `vm-catalog`.
pub fn commands() -> Vec<Command> {
    vec![
        vm_catalogd::cli::Cli::command(),
        vm_catalog::cli::Cli::command(),
    ]
}

/// Where the generated files go: `contrib/` of this repository.
pub fn contrib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes `completions/` and `man/` under `out`.
pub fn generate(out: &Path) -> io::Result<()> {
    let completions = out.join("completions");
    let man = out.join("man");
    fs::create_dir_all(&completions)?;
    fs::create_dir_all(&man)?;
    for mut cmd in commands() {
        let name = cmd.get_name().to_owned();
        for (shell, file) in [
            (Shell::Bash, format!("{name}.bash")),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut buf);
            fs::write(completions.join(file), buf)?;
        }
        cmd.build();
        write_man(&cmd, &name, &man)?;
    }
    Ok(())
}

/// A page for the command, and one for each subcommand (`NAME-SUB.1`).
fn write_man(cmd: &Command, name: &str, dir: &Path) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    fs::write(dir.join(format!("{name}.1")), buf)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(sub_name.clone())
            .display_name(sub_name.clone());
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        fs::write(dir.join(format!("{sub_name}.1")), buf)?;
    }
    Ok(())
}
