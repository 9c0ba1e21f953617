//! Tables as kubectl prints them: uppercase headers, columns aligned with two spaces between,
//! `<none>` for an empty cell, no trailing spaces.

/// Shown for an empty cell.
pub const NONE: &str = "<none>";

/// Rows under headers, all as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (uppercased when shown).
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| h.to_uppercase()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells show as empty, extra ones are dropped.
    pub fn push(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The aligned text, one line per row after the header line, each ending in `\n`.
    pub fn render(&self) -> String {
        let shown = |cell: &str| if cell.is_empty() { NONE.to_owned() } else { cell.replace('\n', " ") };
        let rows: Vec<Vec<String>> = self.rows.iter().map(|row| row.iter().map(|c| shown(c)).collect()).collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.headers).chain(&rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `Field: value` lines with the values aligned, as `kubectl describe` shows one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(name, _)| name.chars().count() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(name, value)| {
            let value = if value.is_empty() { NONE } else { value.as_str() };
            format!("{:<width$}  {value}\n", format!("{name}:"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_with_two_spaces() {
        let mut table = Table::new(&["name", "ready", "age"]);
        table.push(vec!["chat".into(), "True".into(), "5m".into()]);
        table.push(vec!["embeddings-large".into(), String::new(), "12d".into()]);
        assert_eq!(
            table.render(),
            "NAME              READY   AGE\n\
             chat              True    5m\n\
             embeddings-large  <none>  12d\n"
        );
    }

    #[test]
    fn rows_are_padded_or_cut_to_the_headers_and_never_end_in_spaces() {
        let mut table = Table::new(&["a", "b"]);
        table.push(vec!["x".into()]);
        table.push(vec!["1".into(), "2".into(), "3".into()]);
        table.push(vec!["multi\nline".into(), "é".into()]);
        let text = table.render();
        assert_eq!(text, "A           B\nx           <none>\n1           2\nmulti line  é\n");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
        assert!(Table::new(&["a"]).is_empty());
    }

    #[test]
    fn fields_align_their_values() {
        let text = fields(&[("Name", "ci".into()), ("Expires", String::new()), ("Scopes", "inference".into())]);
        assert_eq!(text, "Name:     ci\nExpires:  <none>\nScopes:   inference\n");
    }
}
