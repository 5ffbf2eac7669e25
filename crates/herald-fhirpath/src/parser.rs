//! Precedence-climbing parser producing the [`Expr`] tree. Nesting is bounded
//! ([`MAX_DEPTH`]) both in parser recursion and in the depth of the produced tree, so
//! evaluation and drop (both recursive) cannot overflow the stack.

use crate::decimal::Decimal;
use crate::lexer::{tokenize, Tok, Token};
use crate::temporal::Temporal;
use crate::value::{Quantity, TypeSpecifier};
use crate::FhirPathError;

/// Deepest expression tree accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub(crate) enum Literal {
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(String),
    Temporal(Temporal),
    Quantity(Quantity),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Literal(Literal),
    Empty,
    /// A member name evaluated against the focus (the start of a path).
    Identifier(String),
    This,
    Index,
    Total,
    External(String),
    Member(Box<Expr>, String),
    Call {
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
    },
    Indexer(Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, TypeSpecifier),
    As(Box<Expr>, TypeSpecifier),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    source_len: usize,
}

fn binary_op(tok: &Tok) -> Option<(BinaryOp, u8)> {
    let op = match tok {
        Tok::Sym(s) => match *s {
            "*" => (BinaryOp::Mul, 10),
            "/" => (BinaryOp::Div, 10),
            "+" => (BinaryOp::Add, 9),
            "-" => (BinaryOp::Sub, 9),
            "&" => (BinaryOp::Concat, 9),
            "|" => (BinaryOp::Union, 7),
            "<" => (BinaryOp::Lt, 6),
            ">" => (BinaryOp::Gt, 6),
            "<=" => (BinaryOp::Le, 6),
            ">=" => (BinaryOp::Ge, 6),
            "=" => (BinaryOp::Eq, 5),
            "!=" => (BinaryOp::Ne, 5),
            "~" => (BinaryOp::Equiv, 5),
            "!~" => (BinaryOp::NotEquiv, 5),
            _ => return None,
        },
        Tok::Ident(word) => match word.as_str() {
            "div" => (BinaryOp::IntDiv, 10),
            "mod" => (BinaryOp::Mod, 10),
            "in" => (BinaryOp::In, 4),
            "contains" => (BinaryOp::Contains, 4),
            "and" => (BinaryOp::And, 3),
            "or" => (BinaryOp::Or, 2),
            "xor" => (BinaryOp::Xor, 2),
            "implies" => (BinaryOp::Implies, 1),
            _ => return None,
        },
        _ => return None,
    };
    Some(op)
}

/// Binding power of `is` / `as`.
const TYPE_OP_POWER: u8 = 8;

/// FHIRPath calendar duration words (also accepted where UCUM time units are).
pub(crate) const CALENDAR_WORDS: &[&str] = &[
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

pub(crate) fn parse(source: &str) -> Result<Expr, FhirPathError> {
    let tokens = tokenize(source)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        source_len: source.len(),
    };
    if parser.tokens.is_empty() {
        return Err(FhirPathError::Syntax("empty expression".into()));
    }
    let (expr, _) = parser.expression(0)?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(FhirPathError::Syntax(format!(
            "unexpected {} at offset {}",
            describe(&token.tok),
            token.pos
        )));
    }
    Ok(expr)
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) | Tok::Quoted(s) => format!("identifier '{s}'"),
        Tok::Str(_) => "string".into(),
        Tok::Number(n) => format!("number {n}"),
        Tok::DateTime(_) | Tok::Time(_) => "date/time literal".into(),
        Tok::External(n) => format!("%{n}"),
        Tok::Special(n) => format!("${n}"),
        Tok::Sym(s) => format!("'{s}'"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.source_len, |t| t.pos)
    }

    fn error<T>(&self, message: impl std::fmt::Display) -> Result<T, FhirPathError> {
        Err(FhirPathError::Syntax(format!(
            "{message} at offset {}",
            self.offset()
        )))
    }

    fn next(&mut self) -> Option<Tok> {
        let tok = self.tokens.get(self.pos).map(|t| t.tok.clone());
        if tok.is_some() {
            self.pos += 1;
        }
        tok
    }

    fn eat_sym(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == symbol) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, symbol: &str) -> Result<(), FhirPathError> {
        if self.eat_sym(symbol) {
            Ok(())
        } else {
            self.error(format!("expected '{symbol}'"))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<usize, FhirPathError> {
        if depth > MAX_DEPTH || self.depth > MAX_DEPTH {
            Err(FhirPathError::TooComplex(format!(
                "expression nests deeper than {MAX_DEPTH} levels"
            )))
        } else {
            Ok(depth)
        }
    }

    /// Parses an expression whose operators bind tighter than `min_power`; returns it
    /// with the depth of its tree.
    fn expression(&mut self, min_power: u8) -> Result<(Expr, usize), FhirPathError> {
        self.depth += 1;
        self.check_depth(0)?;
        let result = self.expression_inner(min_power);
        self.depth -= 1;
        result
    }

    fn expression_inner(&mut self, min_power: u8) -> Result<(Expr, usize), FhirPathError> {
        let (mut lhs, mut depth) = self.unary()?;
        while let Some(tok) = self.peek() {
            if let Tok::Ident(word) = tok {
                if word == "is" || word == "as" {
                    if TYPE_OP_POWER <= min_power {
                        break;
                    }
                    let is = word == "is";
                    self.pos += 1;
                    let spec = self.type_specifier()?;
                    depth = self.check_depth(depth + 1)?;
                    lhs = if is {
                        Expr::Is(Box::new(lhs), spec)
                    } else {
                        Expr::As(Box::new(lhs), spec)
                    };
                    continue;
                }
            }
            let Some((op, power)) = binary_op(tok) else {
                break;
            };
            if power <= min_power {
                break;
            }
            self.pos += 1;
            let (rhs, rhs_depth) = self.expression(power)?;
            depth = self.check_depth(depth.max(rhs_depth) + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok((lhs, depth))
    }

    fn type_specifier(&mut self) -> Result<TypeSpecifier, FhirPathError> {
        let first = match self.next() {
            Some(Tok::Ident(s)) | Some(Tok::Quoted(s)) => s,
            _ => return self.error("expected a type name"),
        };
        if self.eat_sym(".") {
            let second = match self.next() {
                Some(Tok::Ident(s)) | Some(Tok::Quoted(s)) => s,
                _ => return self.error("expected a type name after '.'"),
            };
            return Ok(TypeSpecifier::new(Some(first), second));
        }
        Ok(TypeSpecifier::new(None, first))
    }

    fn unary(&mut self) -> Result<(Expr, usize), FhirPathError> {
        if self.eat_sym("-") {
            self.depth += 1;
            let inner = self.unary();
            self.depth -= 1;
            let (inner, depth) = inner?;
            let depth = self.check_depth(depth + 1)?;
            return Ok((Expr::Negate(Box::new(inner)), depth));
        }
        if self.eat_sym("+") {
            self.depth += 1;
            let inner = self.unary();
            self.depth -= 1;
            return inner;
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<(Expr, usize), FhirPathError> {
        let (mut expr, mut depth) = self.term()?;
        loop {
            if self.eat_sym(".") {
                let name = match self.next() {
                    Some(Tok::Ident(s)) | Some(Tok::Quoted(s)) => s,
                    _ => return self.error("expected a name after '.'"),
                };
                if self.eat_sym("(") {
                    let (args, args_depth) = self.arguments()?;
                    depth = self.check_depth(depth.max(args_depth) + 1)?;
                    expr = Expr::Call {
                        target: Some(Box::new(expr)),
                        name,
                        args,
                    };
                } else {
                    depth = self.check_depth(depth + 1)?;
                    expr = Expr::Member(Box::new(expr), name);
                }
            } else if self.eat_sym("[") {
                let (index, index_depth) = self.expression(0)?;
                self.expect_sym("]")?;
                depth = self.check_depth(depth.max(index_depth) + 1)?;
                expr = Expr::Indexer(Box::new(expr), Box::new(index));
            } else {
                return Ok((expr, depth));
            }
        }
    }

    /// Arguments after an already consumed `(`.
    fn arguments(&mut self) -> Result<(Vec<Expr>, usize), FhirPathError> {
        let mut args = Vec::new();
        let mut depth = 0;
        if self.eat_sym(")") {
            return Ok((args, depth));
        }
        loop {
            let (arg, arg_depth) = self.expression(0)?;
            depth = depth.max(arg_depth);
            args.push(arg);
            if self.eat_sym(")") {
                return Ok((args, depth));
            }
            self.expect_sym(",")?;
        }
    }

    fn term(&mut self) -> Result<(Expr, usize), FhirPathError> {
        let Some(tok) = self.next() else {
            return self.error("unexpected end of expression");
        };
        let expr = match tok {
            Tok::Sym("(") => {
                let (inner, depth) = self.expression(0)?;
                self.expect_sym(")")?;
                return Ok((inner, depth));
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Expr::Empty
            }
            Tok::Str(s) => Expr::Literal(Literal::String(s)),
            Tok::Number(text) => return self.number(&text),
            Tok::DateTime(text) => {
                let parsed = if text.contains('T') {
                    Temporal::parse_datetime(&text)
                } else {
                    Temporal::parse_date(&text)
                };
                match parsed {
                    Some(t) => Expr::Literal(Literal::Temporal(t)),
                    None => return self.error(format!("invalid date/time literal '@{text}'")),
                }
            }
            Tok::Time(text) => match Temporal::parse_time(&text) {
                Some(t) => Expr::Literal(Literal::Temporal(t)),
                None => return self.error(format!("invalid time literal '@T{text}'")),
            },
            Tok::External(name) => Expr::External(name),
            Tok::Special(name) => match name.as_str() {
                "this" => Expr::This,
                "index" => Expr::Index,
                _ => Expr::Total,
            },
            Tok::Ident(word) => match word.as_str() {
                "true" => Expr::Literal(Literal::Boolean(true)),
                "false" => Expr::Literal(Literal::Boolean(false)),
                _ => return self.identifier_or_call(word),
            },
            Tok::Quoted(name) => return self.identifier_or_call(name),
            other => return self.error(format!("unexpected {}", describe(&other))),
        };
        Ok((expr, 1))
    }

    fn identifier_or_call(&mut self, name: String) -> Result<(Expr, usize), FhirPathError> {
        if self.eat_sym("(") {
            let (args, depth) = self.arguments()?;
            let depth = self.check_depth(depth + 1)?;
            return Ok((
                Expr::Call {
                    target: None,
                    name,
                    args,
                },
                depth,
            ));
        }
        Ok((Expr::Identifier(name), 1))
    }

    fn number(&mut self, text: &str) -> Result<(Expr, usize), FhirPathError> {
        let Some(decimal) = Decimal::parse(text) else {
            return self.error(format!("invalid number '{text}'"));
        };
        // A unit directly after the number makes a quantity literal.
        let unit = match self.peek() {
            Some(Tok::Str(unit)) => Some((unit.clone(), false)),
            Some(Tok::Ident(word)) if CALENDAR_WORDS.contains(&word.as_str()) => {
                Some((word.clone(), true))
            }
            _ => None,
        };
        if let Some((unit, calendar)) = unit {
            self.pos += 1;
            return Ok((
                Expr::Literal(Literal::Quantity(Quantity::new(decimal, unit, calendar))),
                1,
            ));
        }
        let literal = if text.contains('.') {
            Literal::Decimal(decimal)
        } else {
            match text.parse::<i64>() {
                Ok(i) => Literal::Integer(i),
                Err(_) => Literal::Decimal(decimal),
            }
        };
        Ok((Expr::Literal(literal), 1))
    }
}
