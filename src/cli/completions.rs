//! `regauth completions <SHELL>`: print a shell completion script for `regauth` on stdout.
//!
//! Owns: turning the clap definition into bash/zsh/fish/elvish/powershell completions (used by the
//! .deb build, `packaging/deb/build.sh`). Does not own the command definitions themselves.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

pub const EXAMPLES: &str = "Examples:
  regauth completions bash > /etc/bash_completion.d/regauth
  regauth completions zsh > \"${fpath[1]}/_regauth\"
  regauth completions fish > ~/.config/fish/completions/regauth.fish";

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(a: CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "regauth", &mut std::io::stdout());
    Ok(0)
}
