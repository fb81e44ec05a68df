//! The compiled form of an expression: a tree of enum nodes with field paths already split.

use super::functions::Function;
use crate::value::{Str, Value};

/// The deepest tree the parser builds; deeper input is a parse error, so evaluating (and
/// dropping) a tree can never exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 200;

/// A binary operator other than the short-circuiting `&&` / `||`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    /// The verb used in type-mismatch messages ("cannot add string and int").
    pub fn verb(self) -> &'static str {
        match self {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => "compare",
            BinOp::Add => "add",
            BinOp::Sub => "subtract",
            BinOp::Mul => "multiply",
            BinOp::Div => "divide",
            BinOp::Rem => "take the remainder of",
        }
    }
}

/// One node of a compiled expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Literal(Value),
    /// A field path, pre-split (`user.id` is `["user", "id"]`).
    Field(Box<[Str]>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    /// A built-in call; the argument count was checked against the function's arity.
    Call(Function, Box<[Node]>),
}

impl Node {
    /// Appends the dotted paths of the fields this tree reads, without duplicates.
    pub fn collect_fields(&self, out: &mut Vec<String>) {
        match self {
            Node::Literal(_) => {}
            Node::Field(path) => {
                let p = path.join(".");
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            Node::Not(a) | Node::Neg(a) => a.collect_fields(out),
            Node::And(a, b) | Node::Or(a, b) | Node::Binary(_, a, b) => {
                a.collect_fields(out);
                b.collect_fields(out);
            }
            Node::Call(_, args) => args.iter().for_each(|a| a.collect_fields(out)),
        }
    }

    /// The children of this node, for constant folding.
    pub fn children(&self) -> Vec<&Node> {
        match self {
            Node::Literal(_) | Node::Field(_) => Vec::new(),
            Node::Not(a) | Node::Neg(a) => vec![a],
            Node::And(a, b) | Node::Or(a, b) | Node::Binary(_, a, b) => vec![a, b],
            Node::Call(_, args) => args.iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::split_path;

    fn field(p: &str) -> Node {
        Node::Field(split_path(p).into_boxed_slice())
    }

    #[test]
    fn collects_fields_in_order_without_duplicates() {
        let tree = Node::Binary(
            BinOp::Add,
            Box::new(field("a.b")),
            Box::new(Node::Call(
                Function::Coalesce,
                vec![field("c"), field("a.b"), Node::Literal(Value::Int(1))].into_boxed_slice(),
            )),
        );
        let mut out = Vec::new();
        tree.collect_fields(&mut out);
        assert_eq!(out, ["a.b", "c"]);
    }

    #[test]
    fn operator_names() {
        assert_eq!(BinOp::Ge.symbol(), ">=");
        assert_eq!(BinOp::Sub.verb(), "subtract");
    }
}
