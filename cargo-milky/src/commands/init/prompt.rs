//! The questions init asks on a terminal, and the defaults it takes elsewhere or with --yes.

/// Asks on a terminal; elsewhere (or with --yes) every question takes its default.
#[derive(Clone, Copy)]
pub(super) struct Prompt {
    pub(super) interactive: bool,
}

impl Prompt {
    pub(super) fn input(
        self,
        prompt: &str,
        default: Option<String>,
        allow_empty: bool,
    ) -> anyhow::Result<Option<String>> {
        if !self.interactive {
            return Ok(default);
        }
        let mut input = dialoguer::Input::<String>::new()
            .with_prompt(prompt)
            .allow_empty(allow_empty);
        if let Some(default) = default {
            input = input.default(default);
        }
        Ok(Some(input.interact_text()?))
    }

    /// The index of the chosen item; 0 (the default) without a terminal.
    pub(super) fn select(self, prompt: &str, items: &[String]) -> anyhow::Result<usize> {
        if !self.interactive || items.len() < 2 {
            return Ok(0);
        }
        Ok(dialoguer::Select::new()
            .with_prompt(prompt)
            .items(items)
            .default(0)
            .interact()?)
    }

    pub(super) fn confirm(self, prompt: &str, default: bool) -> anyhow::Result<bool> {
        if !self.interactive {
            return Ok(default);
        }
        Ok(dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(default)
            .interact()?)
    }
}
