//! Printing results: aligned columns for people, pretty JSON for scripts.

use std::io::Write;

/// Rows of text printed under a header, each column as wide as its widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per header column.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    /// The table as lines ending in `\n`, columns three spaces apart, as kubectl does.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header = self.header.iter().map(|h| h.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("   ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes text to stdout. Unlike `print!`, a closed pipe (`trellis ... | head`) is an
/// error the caller returns, not a panic; see [`is_broken_pipe`].
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints a JSON value, pretty, on stdout.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Whether the reader of stdout went away; then there is nobody to tell, so exit quietly.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `1 file`, `3 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["SERVICE", "PORT", "BACKENDS"]);
        t.row(vec!["rides/billing".into(), "80".into(), "a=1".into()]);
        t.row(vec!["rides/trip".into(), "8080".into(), String::new()]);
        assert_eq!(
            t.render(),
            "SERVICE         PORT   BACKENDS\n\
             rides/billing   80     a=1\n\
             rides/trip      8080\n"
        );
    }

    #[test]
    fn counts_pick_the_right_noun() {
        assert_eq!(count(1, "proxy", "proxies"), "1 proxy");
        assert_eq!(count(0, "proxy", "proxies"), "0 proxies");
    }
}
