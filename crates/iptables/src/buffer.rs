//! A line buffer for iptables-restore input: words joined by single spaces, one rule
//! per line, counted (the counts feed upstream's rule-count metrics).

/// Accumulates lines of iptables-restore input.
#[derive(Debug, Default)]
pub struct LineBuffer {
    text: String,
    lines: usize,
    discard: bool,
}

impl LineBuffer {
    /// A buffer that keeps what is written.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer that only counts lines (for chains a partial sync leaves untouched).
    pub fn discarding() -> Self {
        Self {
            discard: true,
            ..Self::default()
        }
    }

    /// Writes one line made of `words` (empty words are skipped).
    pub fn line(&mut self, words: &[&str]) {
        self.lines += 1;
        if self.discard {
            return;
        }
        let mut first = true;
        for w in words.iter().filter(|w| !w.is_empty()) {
            if !first {
                self.text.push(' ');
            }
            self.text.push_str(w);
            first = false;
        }
        self.text.push('\n');
    }

    /// Writes a chain declaration (`:NAME - [0:0]`), which creates or flushes the chain.
    pub fn chain(&mut self, name: &str) {
        self.lines += 1;
        if self.discard {
            return;
        }
        self.text.push(':');
        self.text.push_str(name);
        self.text.push_str(" - [0:0]\n");
    }

    /// Number of lines written (or counted).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The text written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}
