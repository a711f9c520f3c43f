//! The ids of the last edits, kept at the end of the file, by which an edit's read-back tells
//! that it landed (see [`crate::store::Store::edit_index`]).

use super::Index;

/// The ids of recent edits ride in comment lines at the end of the file, not in a TOML key:
/// builds that predate them refuse unknown keys but keep comments through their own edits.
const EDITS_LINE: &str = "# milky-edits:";
/// How many edit ids the index remembers: more than can land between one controller's write and
/// its read-back.
pub const RECENT_EDITS: usize = 64;
const EDITS_PER_LINE: usize = 8;

impl Index {
    /// The ids of the last [`RECENT_EDITS`] edits, oldest first (see
    /// [`crate::store::Store::edit_index`]).
    pub fn recent_edits(&self) -> Vec<String> {
        let trailing = self.doc.trailing().as_str().unwrap_or_default();
        trailing
            .lines()
            .filter_map(|line| line.trim().strip_prefix(EDITS_LINE))
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect()
    }

    /// Records an edit's id, forgetting the oldest beyond [`RECENT_EDITS`]. Whatever else is at
    /// the end of the file (a comment someone wrote) stays.
    pub fn record_edit(&mut self, id: &str) {
        let mut ids = self.recent_edits();
        ids.push(id.to_owned());
        let ids = &ids[ids.len().saturating_sub(RECENT_EDITS)..];
        let trailing = self.doc.trailing().as_str().unwrap_or_default().to_owned();
        let mut kept: Vec<&str> = trailing
            .lines()
            .filter(|line| !line.trim().starts_with(EDITS_LINE))
            .collect();
        while kept.last().is_some_and(|line| line.trim().is_empty()) {
            kept.pop();
        }
        let mut text: String = kept.iter().map(|line| format!("{line}\n")).collect();
        text.push('\n');
        for chunk in ids.chunks(EDITS_PER_LINE) {
            text.push_str(&format!("{EDITS_LINE} {}\n", chunk.join(" ")));
        }
        self.doc.set_trailing(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{app, entry, group, version};

    #[test]
    fn edit_ids_are_kept_bounded_and_invisible_to_readers() {
        let mut index = Index::new();
        index
            .add_package(&app("a"), &version("v1"), &entry('a'))
            .unwrap();
        index.record_edit("first");
        let text = format!("{index}# someone's note\n");
        let mut index = Index::parse(&text).unwrap();
        assert_eq!(index.recent_edits(), ["first"]);
        for n in 0..RECENT_EDITS + 5 {
            index.record_edit(&format!("id{n}"));
            // An edit made after the ids: they stay at the end of the file.
            index
                .set_version(&group("g"), &app("a"), &version("v1"))
                .unwrap();
        }
        let text = index.to_string();
        let reread = Index::parse(&text).unwrap();
        let ids = reread.recent_edits();
        assert_eq!(ids.len(), RECENT_EDITS);
        assert_eq!(ids.first().unwrap(), "id5");
        assert_eq!(ids.last().unwrap(), &format!("id{}", RECENT_EDITS + 4));
        assert!(text.contains("# someone's note\n"), "{text}");
        assert!(
            text.trim_end()
                .ends_with(&format!("id{}", RECENT_EDITS + 4)),
            "{text}"
        );
        // Readers that know nothing of the ids (serde, as older builds) see a plain index.
        let plain: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(plain.as_table().unwrap().len(), 3, "{plain}");
        assert_eq!(reread.group(&group("g")).len(), 1);
    }
}
