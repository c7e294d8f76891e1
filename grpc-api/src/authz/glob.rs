//! Map-name patterns of the policy: a name, or a glob where `*` matches any
//! run of characters (also none) and `?` exactly one.

/// A map name or glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern(Vec<char>);

impl Pattern {
    /// A pattern from its text; empty text is refused.
    pub(crate) fn new(text: &str) -> Result<Pattern, &'static str> {
        if text.is_empty() {
            return Err("an empty map pattern matches nothing (use \"*\" for every map)");
        }
        Ok(Pattern(text.chars().collect()))
    }

    /// Whether `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (pattern, mut p, mut n) = (&self.0, 0, 0);
        // the last `*` seen and the name position it was tried at
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(c) if *c == '?' || *c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((star_p, star_n)) => {
                        p = star_p + 1;
                        n = star_n + 1;
                        star = Some((star_p, star_n + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).expect("pattern").matches(name)
    }

    #[test]
    fn names_and_globs() {
        assert!(matches("flows", "flows"));
        assert!(!matches("flows", "flows2"));
        assert!(!matches("flows", "flow"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("cfg_*", "cfg_"));
        assert!(matches("cfg_*", "cfg_rules"));
        assert!(!matches("cfg_*", "xcfg_rules"));
        assert!(matches("*_v?", "rules_v2"));
        assert!(!matches("*_v?", "rules_v10"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("a**", "a"));
        assert!(Pattern::new("").is_err());
    }

    /// A reference matcher: tries every split at each `*`.
    fn reference(pattern: &[char], name: &[char]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some(('*', rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((c, rest)) => name
                .split_first()
                .is_some_and(|(n, tail)| (*c == '?' || c == n) && reference(rest, tail)),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(pattern in "[ab*?]{1,8}", name in "[ab]{0,10}") {
            let chars: Vec<char> = pattern.chars().collect();
            let name_chars: Vec<char> = name.chars().collect();
            prop_assert_eq!(matches(&pattern, &name), reference(&chars, &name_chars));
        }
    }
}
