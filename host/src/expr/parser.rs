//! A precedence-climbing parser from tokens to [`Node`]s.

use super::eval::Function;
use super::lexer::{Tok, Token};
use super::{BinOp, Node, ParseError, UnOp};
use crate::value::{split_path, Str, Value};

pub(crate) struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

fn binop(tok: &Tok) -> Option<(BinOp, u8)> {
    Some(match tok {
        Tok::Op("||") => (BinOp::Or, 1),
        Tok::Ident(w) if w == "or" => (BinOp::Or, 1),
        Tok::Op("&&") => (BinOp::And, 2),
        Tok::Ident(w) if w == "and" => (BinOp::And, 2),
        Tok::Op("==") => (BinOp::Eq, 3),
        Tok::Op("!=") => (BinOp::Ne, 3),
        Tok::Op("<") => (BinOp::Lt, 3),
        Tok::Op("<=") => (BinOp::Le, 3),
        Tok::Op(">") => (BinOp::Gt, 3),
        Tok::Op(">=") => (BinOp::Ge, 3),
        Tok::Op("+") => (BinOp::Add, 4),
        Tok::Op("-") => (BinOp::Sub, 4),
        Tok::Op("*") => (BinOp::Mul, 5),
        Tok::Op("/") => (BinOp::Div, 5),
        Tok::Op("%") => (BinOp::Rem, 5),
        _ => return None,
    })
}

impl<'a> Parser<'a> {
    pub fn new(tokens: &'a [Token], _text: &str) -> Self {
        Parser { tokens, pos: 0 }
    }

    pub fn parse(mut self) -> Result<Node, ParseError> {
        let node = self.expr(0)?;
        let t = self.peek();
        if t.tok != Tok::End {
            return Err(self.error_at(t.column, format!("unexpected {}", describe(&t.tok)), Some("an operator like `+`, `==` or `&&` may be missing")));
        }
        Ok(node)
    }

    fn peek(&self) -> &'a Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> &'a Token {
        let t = self.peek();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn error_at(&self, column: usize, message: String, hint: Option<&str>) -> ParseError {
        ParseError { column, message, hint: hint.map(str::to_string) }
    }

    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        let mut left = self.unary()?;
        while let Some((op, prec)) = binop(&self.peek().tok) {
            if prec <= min_prec {
                break;
            }
            self.next();
            let right = self.expr(prec)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        match &self.peek().tok {
            Tok::Op("-") => {
                self.next();
                let operand = self.unary()?;
                Ok(match operand {
                    Node::Literal(Value::Int(i)) => Node::Literal(Value::Int(-i)),
                    Node::Literal(Value::Float(f)) => Node::Literal(Value::Float(-f)),
                    other => Node::Unary(UnOp::Neg, Box::new(other)),
                })
            }
            Tok::Op("!") => {
                self.next();
                Ok(Node::Unary(UnOp::Not, Box::new(self.unary()?)))
            }
            Tok::Ident(w) if w == "not" => {
                self.next();
                // `not` binds looser than comparisons: `not a == b` is `not (a == b)`.
                Ok(Node::Unary(UnOp::Not, Box::new(self.expr(2)?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let t = self.next();
        match &t.tok {
            Tok::Int(i) => Ok(Node::Literal(Value::Int(*i))),
            Tok::Float(f) => Ok(Node::Literal(Value::Float(*f))),
            Tok::Str(s) => Ok(Node::Literal(Value::Str(Str::from(s.as_str())))),
            Tok::Quoted(name) => Ok(Node::Field(vec![Str::from(name.as_str())])),
            Tok::LParen => {
                let inner = self.expr(0)?;
                let close = self.next();
                if close.tok != Tok::RParen {
                    return Err(self.error_at(close.column, format!("expected `)`, found {}", describe(&close.tok)), None));
                }
                Ok(inner)
            }
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Node::Literal(Value::Bool(true))),
                "false" => Ok(Node::Literal(Value::Bool(false))),
                "null" => Ok(Node::Literal(Value::Null)),
                _ if self.peek().tok == Tok::LParen => self.call(word, t.column),
                _ => Ok(Node::Field(split_path(word))),
            },
            other => Err(self.error_at(t.column, format!("expected a value, found {}", describe(other)), None)),
        }
    }

    fn call(&mut self, name: &str, column: usize) -> Result<Node, ParseError> {
        let f = Function::by_name(name).ok_or_else(|| {
            let names: Vec<&str> = super::FUNCTIONS.iter().map(|(n, _)| *n).collect();
            let close = names.iter().copied().max_by(|a, b| {
                strsim::jaro_winkler(name, a).total_cmp(&strsim::jaro_winkler(name, b))
            });
            let hint = match close.filter(|c| strsim::jaro_winkler(name, c) > 0.8) {
                Some(c) => format!("did you mean `{c}`? functions: {}", names.join(", ")),
                None => format!("functions: {}", names.join(", ")),
            };
            ParseError { column, message: format!("unknown function `{name}`"), hint: Some(hint) }
        })?;
        self.next(); // (
        let mut args = Vec::new();
        if self.peek().tok == Tok::RParen {
            self.next();
        } else {
            loop {
                args.push(self.expr(0)?);
                let t = self.next();
                match t.tok {
                    Tok::Comma => continue,
                    Tok::RParen => break,
                    _ => return Err(self.error_at(t.column, format!("expected `,` or `)`, found {}", describe(&t.tok)), None)),
                }
            }
        }
        let (min, max) = f.arity();
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                (a, usize::MAX) => format!("at least {a} arguments"),
                (a, b) => format!("{a} to {b} arguments"),
            };
            return Err(ParseError {
                column,
                message: format!("`{name}` takes {expected}, got {}", args.len()),
                hint: None,
            });
        }
        Ok(Node::Call(f, args))
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::End => "the end of the expression".into(),
        Tok::Int(i) => format!("`{i}`"),
        Tok::Float(f) => format!("`{f}`"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Ident(w) | Tok::Quoted(w) => format!("`{w}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
    }
}
