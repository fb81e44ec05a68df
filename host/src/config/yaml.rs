//! A YAML tree that remembers where each node was written (line and column), built from
//! `yaml-rust2`'s event parser, so every configuration error can point at its place.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML node with its 1-based position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A scalar's text; `quoted` when written in quotes (then never null/bool/number).
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, quoted: false } if text.is_empty() || text == "~" || text == "null")
    }

    /// What kind of node this is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing (null)",
            Kind::Scalar { quoted: true, .. } => "a string",
            Kind::Scalar { text, .. } if text.parse::<f64>().is_ok() => "a number",
            Kind::Scalar { text, .. } if text == "true" || text == "false" => "a boolean",
            Kind::Scalar { .. } => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error, with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<Node>)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    done: bool,
}

fn at(kind: Kind, mark: &Marker) -> Node {
    Node {
        kind,
        line: mark.line().max(1),
        col: mark.col() + 1,
    }
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
                self.done = true;
            }
            Some((
                Node {
                    kind: Kind::Seq(items),
                    ..
                },
                _,
            )) => items.push(node),
            Some((
                Node {
                    kind: Kind::Map(entries),
                    ..
                },
                pending,
            )) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
            Some(_) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() || self.done {
            return;
        }
        match ev {
            Event::Scalar(text, style, _, _) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_value(at(Kind::Scalar { text, quoted }, &mark));
            }
            Event::SequenceStart(..) => self.stack.push((at(Kind::Seq(Vec::new()), &mark), None)),
            Event::MappingStart(..) => self.stack.push((at(Kind::Map(Vec::new()), &mark), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push_value(node);
                }
            }
            Event::Alias(_) => {
                self.error = Some(SyntaxError {
                    line: mark.line(),
                    col: mark.col() + 1,
                    message: "YAML aliases (`*name`) are not supported in pipeline files; write the value out".into(),
                })
            }
            _ => {}
        }
    }
}

/// Parses the first YAML document of `text`. An empty document is `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_positions() {
        let root = parse("a: 1\nb:\n  - x\n  - 'y'\n")
            .expect("valid")
            .expect("document");
        let Kind::Map(entries) = &root.kind else {
            panic!("map expected")
        };
        assert_eq!(entries[0].0.scalar(), Some("a"));
        assert_eq!((entries[0].1.line, entries[0].1.col), (1, 4));
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!("seq expected")
        };
        assert_eq!((items[1].line, items[1].col), (4, 5));
        assert_eq!(
            items[1].kind,
            Kind::Scalar {
                text: "y".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("a: [1, 2\nb: 3\n").expect_err("unclosed flow sequence");
        assert!(e.line >= 1, "{e:?}");
        assert!(!e.message.is_empty());
    }

    #[test]
    fn aliases_are_rejected() {
        let e = parse("a: &x 1\nb: *x\n").expect_err("alias");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(parse("").expect("ok"), None);
        assert_eq!(parse("# just a comment\n").expect("ok"), None);
    }
}
