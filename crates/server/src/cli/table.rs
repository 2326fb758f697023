//! Column-aligned tables for people.

use std::fmt;

/// Columns at least this wide, so streamed rows line up without knowing what comes.
const MIN_WIDTH: usize = 16;
const PADDING: usize = 3;

pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|row| row.get(i))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(MIN_WIDTH)
            })
            .collect()
    }

    fn write_row(f: &mut impl fmt::Write, row: &[String], widths: &[usize]) -> fmt::Result {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            write!(f, "{cell}")?;
            if i != last {
                // Always some space, even after a cell wider than its column.
                let pad = widths[i].saturating_sub(cell.chars().count()) + PADDING;
                write!(f, "{:pad$}", "")?;
            }
        }
        writeln!(f)
    }

    /// Only the header line, at the minimum widths (for a stream of rows).
    pub(crate) fn header_only(&self) -> String {
        let mut out = String::new();
        let _ = Self::write_row(&mut out, &self.header, &vec![MIN_WIDTH; self.header.len()]);
        out
    }

    /// Only the rows, at the minimum widths (for a stream of rows).
    pub(crate) fn rows_only(&self) -> String {
        let mut out = String::new();
        let widths = vec![MIN_WIDTH; self.header.len()];
        for row in &self.rows {
            let _ = Self::write_row(&mut out, row, &widths);
        }
        out
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        Self::write_row(f, &self.header, &widths)?;
        for row in &self.rows {
            Self::write_row(f, row, &widths)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut table = Table::new(["ID", "STATUS", "BUNDLE"]);
        table.row([
            "a-rather-long-container-id".into(),
            "running".into(),
            "/b".into(),
        ]);
        table.row(["x".into(), "paused".into(), "/bundles/x".into()]);
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("STATUS"), lines[1].find("running"));
        assert_eq!(lines[1].find("/b"), lines[2].find("/bundles/x"));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn streamed_rows_keep_cells_apart_even_when_too_wide() {
        let mut table = Table::new(["TYPE", "ID"]);
        table.row(["start-container-and-more".into(), "c3".into()]);
        assert_eq!(table.rows_only(), "start-container-and-more   c3\n");
    }
}
