//! Unified diffs between two sets of policy files, written for people
//! reading `baton policy show` and `baton policy diff` (and for `patch`).
//!
//! Lines are compared with Myers' O((N+M)·D) algorithm after the common
//! head and tail are set aside, so the usual edit (a few lines of a prompt)
//! costs next to nothing whatever the file's size. The edit script is
//! minimal up to [`MAX_EDITS`] differing lines per file; beyond that the
//! differing middle is shown as deleted then inserted, which is still a
//! correct diff, only not the shortest, and keeps the memory of the search
//! bounded (it grows with the square of the edit distance).
//!
//! The output follows `diff -u`: `---`/`+++` headers naming both versions,
//! hunks with three lines of context, `\ No newline at end of file` where a
//! file's last line has no newline. A file only on one side is diffed
//! against `/dev/null`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Lines of context around each change.
pub const CONTEXT: usize = 3;

/// The edit distance up to which a file's diff is minimal.
pub const MAX_EDITS: usize = 2000;

/// One step of an edit script, with 0-based line indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    Keep { old: usize, new: usize },
    Delete { old: usize },
    Insert { new: usize },
}

/// The unified diff from `old` to `new` (relative path → content), every
/// file that differs, in path order. `old_label` and `new_label` name the
/// two sides in the headers (`v1`, `v2`); `None` for a side that does not
/// exist (the first version is diffed against nothing). Empty when the two
/// sets are equal.
pub fn unified(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    old_label: Option<&str>,
    new_label: Option<&str>,
) -> String {
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = String::new();
    for path in paths {
        let before = old.get(path).map(String::as_str);
        let after = new.get(path).map(String::as_str);
        if before == after {
            continue;
        }
        let header = |label: Option<&str>, present: bool| match label {
            Some(label) if present => format!("{label}/{path}"),
            _ => "/dev/null".to_owned(),
        };
        let _ = writeln!(out, "--- {}", header(old_label, before.is_some()));
        let _ = writeln!(out, "+++ {}", header(new_label, after.is_some()));
        file(before.unwrap_or(""), after.unwrap_or(""), &mut out);
    }
    out
}

/// What a diff made by [`unified`] changes: files, lines added, lines
/// removed. Read by the hunk headers' counts, so that content lines that
/// look like headers (`+++ x` added) are not mistaken for them.
pub fn stats(diff: &str) -> (usize, usize, usize) {
    let (mut files, mut added, mut removed) = (0, 0, 0);
    let (mut old_left, mut new_left) = (0usize, 0usize);
    for line in diff.lines() {
        if old_left > 0 || new_left > 0 {
            match line.as_bytes().first() {
                Some(b'-') => {
                    removed += 1;
                    old_left -= 1;
                }
                Some(b'+') => {
                    added += 1;
                    new_left -= 1;
                }
                Some(b' ') => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with("+++ ") {
            files += 1;
        } else if let Some(rest) = line.strip_prefix("@@ -") {
            let mut ranges = rest.split(' ');
            let count = |range: Option<&str>| {
                range
                    .and_then(|r| r.split(',').nth(1).map_or(Some(1), |n| n.parse().ok()))
                    .unwrap_or(0)
            };
            old_left = count(ranges.next());
            new_left = count(ranges.next().map(|r| r.trim_start_matches('+')));
        }
    }
    (files, added, removed)
}

/// The hunks of one file's diff.
fn file(old: &str, new: &str, out: &mut String) {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let edits = edit_script(&a, &b);
    for hunk in hunks(&edits) {
        write_hunk(&edits, hunk, &a, &b, out);
    }
}

/// The edit script turning `a` into `b`.
fn edit_script(a: &[&str], b: &[&str]) -> Vec<Edit> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);

    let mut edits: Vec<Edit> = (0..head).map(|i| Edit::Keep { old: i, new: i }).collect();
    match myers(a_mid, b_mid, MAX_EDITS) {
        Some(middle) => edits.extend(middle.into_iter().map(|edit| match edit {
            Edit::Keep { old, new } => Edit::Keep {
                old: old + head,
                new: new + head,
            },
            Edit::Delete { old } => Edit::Delete { old: old + head },
            Edit::Insert { new } => Edit::Insert { new: new + head },
        })),
        None => {
            edits.extend((0..a_mid.len()).map(|i| Edit::Delete { old: head + i }));
            edits.extend((0..b_mid.len()).map(|i| Edit::Insert { new: head + i }));
        }
    }
    let (a_tail, b_tail) = (a.len() - tail, b.len() - tail);
    edits.extend((0..tail).map(|i| Edit::Keep {
        old: a_tail + i,
        new: b_tail + i,
    }));
    edits
}

/// Myers' greedy shortest edit script, or `None` when it needs more than
/// `max_edits` insertions and deletions.
fn myers(a: &[&str], b: &[&str], max_edits: usize) -> Option<Vec<Edit>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let limit = max_edits.min(a.len() + b.len()) as isize;
    // v[k + offset]: the furthest x reached on diagonal k = x - y.
    let offset = limit + 1;
    let mut v = vec![0isize; 2 * offset as usize + 1];
    // The frontier before each round, for walking back the path found.
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut found = None;
    'search: for d in 0..=limit {
        trace.push(v.clone());
        let mut k = -d;
        while k <= d {
            let index = (k + offset) as usize;
            let mut x = if k == -d || (k != d && v[index - 1] < v[index + 1]) {
                v[index + 1]
            } else {
                v[index - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[index] = x;
            if x >= n && y >= m {
                found = Some(d);
                break 'search;
            }
            k += 2;
        }
    }
    found?;

    let mut edits = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, v) in trace.iter().enumerate().rev() {
        let d = d as isize;
        let k = x - y;
        let index = |k: isize| (k + offset) as usize;
        let previous_k = if k == -d || (k != d && v[index(k - 1)] < v[index(k + 1)]) {
            k + 1
        } else {
            k - 1
        };
        let previous_x = if d == 0 { 0 } else { v[index(previous_k)] };
        let previous_y = if d == 0 { 0 } else { previous_x - previous_k };
        while x > previous_x && y > previous_y {
            x -= 1;
            y -= 1;
            edits.push(Edit::Keep {
                old: x as usize,
                new: y as usize,
            });
        }
        if d > 0 {
            if x == previous_x {
                edits.push(Edit::Insert {
                    new: previous_y as usize,
                });
            } else {
                edits.push(Edit::Delete {
                    old: previous_x as usize,
                });
            }
        }
        x = previous_x;
        y = previous_y;
    }
    edits.reverse();
    Some(edits)
}

/// Ranges of the edit script that make one hunk each: every change with up
/// to [`CONTEXT`] kept lines either side, hunks whose context would touch
/// merged into one.
fn hunks(edits: &[Edit]) -> Vec<(usize, usize)> {
    let changes: Vec<usize> = edits
        .iter()
        .enumerate()
        .filter(|(_, e)| !matches!(e, Edit::Keep { .. }))
        .map(|(i, _)| i)
        .collect();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &change in &changes {
        let start = change.saturating_sub(CONTEXT);
        let end = (change + 1 + CONTEXT).min(edits.len());
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

fn write_hunk(
    all: &[Edit],
    (start, end): (usize, usize),
    a: &[&str],
    b: &[&str],
    out: &mut String,
) {
    // Lines of each side before the hunk: where an empty side's range
    // points (the line after which the change goes).
    let old_before = all[..start]
        .iter()
        .filter(|e| !matches!(e, Edit::Insert { .. }))
        .count();
    let new_before = all[..start]
        .iter()
        .filter(|e| !matches!(e, Edit::Delete { .. }))
        .count();
    let edits = &all[start..end];
    let old_len = edits
        .iter()
        .filter(|e| !matches!(e, Edit::Insert { .. }))
        .count();
    let new_len = edits
        .iter()
        .filter(|e| !matches!(e, Edit::Delete { .. }))
        .count();
    let range = |before: usize, len: usize| match len {
        0 => format!("{before},0"),
        1 => format!("{}", before + 1),
        len => format!("{},{len}", before + 1),
    };
    let _ = writeln!(
        out,
        "@@ -{} +{} @@",
        range(old_before, old_len),
        range(new_before, new_len)
    );
    for edit in edits {
        let (sign, line) = match *edit {
            Edit::Keep { old, .. } => (' ', a[old]),
            Edit::Delete { old } => ('-', a[old]),
            Edit::Insert { new } => ('+', b[new]),
        };
        out.push(sign);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\n\\ No newline at end of file\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
            .collect()
    }

    /// Applies a unified diff of one file to `old`, as `patch` would, so
    /// that tests check the diff means what it says.
    fn patch(old: &str, diff: &str) -> String {
        let a: Vec<&str> = old.split_inclusive('\n').collect();
        let mut out = String::new();
        let mut next = 0usize;
        let mut lines = diff.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("@@ -") {
                let old_range = rest.split(' ').next().unwrap();
                let mut parts = old_range.split(',');
                let start: usize = parts.next().unwrap().parse().unwrap();
                let len: usize = parts.next().map_or(1, |l| l.parse().unwrap());
                let begin = if len == 0 { start } else { start - 1 };
                while next < begin {
                    out.push_str(a[next]);
                    next += 1;
                }
                continue;
            }
            if line.starts_with("---") || line.starts_with("+++") {
                continue;
            }
            let no_newline = lines.peek().is_some_and(|l| l.starts_with('\\'));
            let (sign, text) = line.split_at(1);
            match sign {
                " " => {
                    out.push_str(a[next]);
                    next += 1;
                }
                "-" => next += 1,
                "+" => {
                    out.push_str(text);
                    if !no_newline {
                        out.push('\n');
                    }
                }
                "\\" => {}
                other => panic!("unexpected line {other:?}"),
            }
        }
        while next < a.len() {
            out.push_str(a[next]);
            next += 1;
        }
        out
    }

    fn round_trip(old: &str, new: &str) -> String {
        let diff = unified(
            &files(&[("f", old)]),
            &files(&[("f", new)]),
            Some("v1"),
            Some("v2"),
        );
        assert_eq!(patch(old, &diff), new, "diff:\n{diff}");
        diff
    }

    #[test]
    fn one_changed_line_shows_with_three_lines_of_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        let diff = round_trip(old, new);
        assert_eq!(
            diff,
            "--- v1/f\n+++ v2/f\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
    }

    #[test]
    fn distant_changes_make_two_hunks_and_near_ones_one() {
        let lines = |changed: &[(usize, &str)]| -> String {
            (1..=30)
                .map(|i| match changed.iter().find(|(n, _)| *n == i) {
                    Some((_, text)) => format!("{text}\n"),
                    None => format!("{i}\n"),
                })
                .collect()
        };
        let old = lines(&[]);
        let diff = round_trip(&old, &lines(&[(3, "three"), (25, "twenty-five")]));
        assert_eq!(diff.matches("@@ -").count(), 2, "{diff}");
        let diff = round_trip(&old, &lines(&[(3, "three"), (8, "eight")]));
        assert_eq!(diff.matches("@@ -").count(), 1, "{diff}");
    }

    #[test]
    fn added_and_removed_files_are_diffed_against_dev_null() {
        let diff = unified(
            &files(&[("gone.md", "a\n"), ("same", "x\n")]),
            &files(&[("new.md", "b\nc\n"), ("same", "x\n")]),
            Some("v1"),
            Some("v2"),
        );
        assert_eq!(
            diff,
            "--- v1/gone.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n\
             --- /dev/null\n+++ v2/new.md\n@@ -0,0 +1,2 @@\n+b\n+c\n"
        );
    }

    #[test]
    fn a_missing_final_newline_is_marked() {
        let diff = round_trip("a\nb", "a\nb\n");
        assert!(
            diff.contains("-b\n\\ No newline at end of file\n+b\n"),
            "{diff}"
        );
    }

    #[test]
    fn stats_count_by_hunk_headers_not_by_look() {
        let diff = unified(
            &files(&[("a", "x\n-- y\n"), ("b", "1\n")]),
            &files(&[("a", "x\n++ y\n+++ z\n"), ("c", "2\n")]),
            Some("v1"),
            Some("v2"),
        );
        assert_eq!(stats(&diff), (3, 3, 2), "{diff}");
    }

    #[test]
    fn equal_sets_have_an_empty_diff() {
        let set = files(&[("a", "1\n")]);
        assert_eq!(unified(&set, &set, Some("v1"), Some("v2")), "");
    }

    #[test]
    fn insertion_at_the_top_and_deletion_at_the_end_round_trip() {
        round_trip("a\nb\nc\n", "new\na\nb\nc\n");
        round_trip("a\nb\nc\n", "a\nb\n");
        round_trip("", "a\n");
        round_trip("a\n", "");
        round_trip("a\nb\nc\nd\n", "b\nx\nd\ne\n");
    }

    #[test]
    fn the_script_is_minimal() {
        let a: Vec<&str> = "a b c a b b a".split(' ').collect();
        let b: Vec<&str> = "c b a b a c".split(' ').collect();
        let edits = edit_script(&a, &b);
        let changes = edits
            .iter()
            .filter(|e| !matches!(e, Edit::Keep { .. }))
            .count();
        // The classic example from Myers' paper: distance 5.
        assert_eq!(changes, 5);
    }

    #[test]
    fn a_huge_rewrite_falls_back_to_delete_then_insert() {
        let old: String = (0..3000).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..3000).map(|i| format!("new {i}\n")).collect();
        let diff = round_trip(&old, &new);
        assert_eq!(diff.matches("\n-old").count(), 3000);
        assert_eq!(diff.matches("\n+new").count(), 3000);
    }

    proptest::proptest! {
        #[test]
        fn any_diff_patches_old_into_new(
            old in proptest::collection::vec("[abc]{0,2}", 0..25),
            new in proptest::collection::vec("[abc]{0,2}", 0..25),
            old_newline in proptest::bool::ANY,
            new_newline in proptest::bool::ANY,
        ) {
            let mut old = old.join("\n");
            let mut new = new.join("\n");
            if old_newline && !old.is_empty() { old.push('\n'); }
            if new_newline && !new.is_empty() { new.push('\n'); }
            round_trip(&old, &new);
        }
    }
}
