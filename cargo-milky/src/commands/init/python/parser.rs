//! Python expressions, parsed from tokens by recursive descent: just the forms settings files
//! use; anything else parses as [`Expr::Unknown`] or not at all.

use super::Value;
use super::lexer::Tok;

#[derive(Debug, Clone)]
pub(super) enum Expr {
    Lit(Value),
    Name(String),
    Attr(Box<Expr>, String),
    Call(Box<Expr>, Vec<Expr>, Vec<(String, Expr)>),
    Index(Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Unknown,
}

/// Parses a whole expression; None if tokens are left over.
pub(super) fn parse_expr(tokens: &[Tok]) -> Option<Expr> {
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.expr()?;
    (parser.pos == tokens.len()).then_some(expr)
}

struct Parser<'a> {
    tokens: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_name(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(n)) if n == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A full expression: a bare tuple (`a, b`) included.
    fn expr(&mut self) -> Option<Expr> {
        let first = self.test()?;
        if !matches!(self.peek(), Some(Tok::Op(","))) {
            return Some(first);
        }
        let mut items = vec![first];
        while self.eat_op(",") {
            if matches!(self.peek(), None | Some(Tok::Op(")" | "]" | "}"))) {
                break;
            }
            items.push(self.test()?);
        }
        Some(Expr::List(items))
    }

    fn test(&mut self) -> Option<Expr> {
        let expr = self.or()?;
        if self.eat_name("if") {
            // `a if cond else b`: which one depends on what we cannot tell.
            self.or()?;
            if !self.eat_name("else") {
                return None;
            }
            self.test()?;
            return Some(Expr::Unknown);
        }
        if self.eat_name("for") || self.eat_name("lambda") {
            return None;
        }
        Some(expr)
    }

    fn or(&mut self) -> Option<Expr> {
        let mut left = self.and()?;
        while self.eat_name("or") {
            let right = self.and()?;
            left = Expr::Bin("or", Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn and(&mut self) -> Option<Expr> {
        let mut left = self.not()?;
        while self.eat_name("and") {
            let right = self.not()?;
            left = Expr::Bin("and", Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn not(&mut self) -> Option<Expr> {
        if self.eat_name("not") {
            return Some(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Option<Expr> {
        let mut left = self.arith()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ("==" | "!=" | "<" | ">" | "<=" | ">="))) => *op,
                Some(Tok::Name(n)) if n == "in" => "in",
                Some(Tok::Name(n)) if n == "not" || n == "is" => {
                    // `not in`, `is`, `is not`
                    self.pos += 1;
                    self.eat_name("in");
                    self.eat_name("not");
                    let _ = self.arith()?;
                    left = Expr::Unknown;
                    continue;
                }
                _ => return Some(left),
            };
            self.pos += 1;
            let right = self.arith()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn arith(&mut self) -> Option<Expr> {
        let mut left = self.term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ("+" | "-" | "|" | "&"))) => *op,
                _ => return Some(left),
            };
            self.pos += 1;
            let right = self.term()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn term(&mut self) -> Option<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(op @ ("*" | "/" | "//" | "%"))) => *op,
                _ => return Some(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat_op("-") {
            let inner = self.unary()?;
            return Some(match inner {
                Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(-i)),
                _ => Expr::Unknown,
            });
        }
        if self.eat_op("*") || self.eat_op("**") {
            // A star in a list or call: the items are not known one by one.
            self.unary()?;
            return Some(Expr::Unknown);
        }
        let base = self.postfix()?;
        if self.eat_op("**") {
            self.unary()?;
            return Some(Expr::Unknown);
        }
        Some(base)
    }

    fn postfix(&mut self) -> Option<Expr> {
        let mut expr = self.atom()?;
        loop {
            if self.eat_op(".") {
                let Some(Tok::Name(attr)) = self.peek().cloned() else {
                    return None;
                };
                self.pos += 1;
                expr = Expr::Attr(Box::new(expr), attr);
            } else if self.eat_op("(") {
                let mut args = Vec::new();
                let mut kwargs = Vec::new();
                while !self.eat_op(")") {
                    if let (Some(Tok::Name(name)), Some(Tok::Op("="))) =
                        (self.peek().cloned(), self.tokens.get(self.pos + 1))
                    {
                        self.pos += 2;
                        kwargs.push((name, self.test()?));
                    } else {
                        args.push(self.test()?);
                    }
                    if !self.eat_op(",") {
                        if !self.eat_op(")") {
                            return None;
                        }
                        break;
                    }
                }
                expr = Expr::Call(Box::new(expr), args, kwargs);
            } else if self.eat_op("[") {
                let index = self.test()?;
                if self.eat_op(":") {
                    // A slice.
                    while !self.eat_op("]") {
                        self.pos += 1;
                        self.peek()?;
                    }
                    expr = Expr::Unknown;
                    continue;
                }
                if !self.eat_op("]") {
                    return None;
                }
                expr = Expr::Index(Box::new(expr), Box::new(index));
            } else {
                return Some(expr);
            }
        }
    }

    fn atom(&mut self) -> Option<Expr> {
        let tok = self.peek()?.clone();
        self.pos += 1;
        Some(match tok {
            Tok::Str(mut s) => {
                // Adjacent literals concatenate.
                while let Some(Tok::Str(next)) = self.peek() {
                    s.push_str(next);
                    self.pos += 1;
                }
                if matches!(self.peek(), Some(Tok::OpaqueStr)) {
                    self.pos += 1;
                    return Some(Expr::Unknown);
                }
                Expr::Lit(Value::Str(s))
            }
            Tok::OpaqueStr => {
                while matches!(self.peek(), Some(Tok::Str(_) | Tok::OpaqueStr)) {
                    self.pos += 1;
                }
                Expr::Unknown
            }
            Tok::Int(i) => Expr::Lit(Value::Int(i)),
            Tok::Name(n) => match n.as_str() {
                "True" => Expr::Lit(Value::Bool(true)),
                "False" => Expr::Lit(Value::Bool(false)),
                "None" => Expr::Lit(Value::None),
                "lambda" | "yield" | "await" => return None,
                _ => Expr::Name(n),
            },
            Tok::Op("(") => {
                if self.eat_op(")") {
                    return Some(Expr::List(Vec::new()));
                }
                let inner = self.expr()?;
                if !self.eat_op(")") {
                    return None;
                }
                inner
            }
            Tok::Op("[") => Expr::List(self.items("]")?),
            Tok::Op("{") => {
                let mut pairs = Vec::new();
                let mut set = Vec::new();
                while !self.eat_op("}") {
                    if self.eat_op("**") {
                        self.test()?;
                        pairs.push((Expr::Unknown, Expr::Unknown));
                    } else {
                        let key = self.test()?;
                        if self.eat_op(":") {
                            pairs.push((key, self.test()?));
                        } else {
                            set.push(key);
                        }
                    }
                    if !self.eat_op(",") {
                        if !self.eat_op("}") {
                            return None;
                        }
                        break;
                    }
                }
                if set.is_empty() {
                    Expr::Dict(pairs)
                } else {
                    Expr::List(set)
                }
            }
            _ => return None,
        })
    }

    fn items(&mut self, close: &str) -> Option<Vec<Expr>> {
        let mut items = Vec::new();
        while !self.eat_op(close) {
            items.push(self.test()?);
            if !self.eat_op(",") {
                if !self.eat_op(close) {
                    return None;
                }
                break;
            }
        }
        Some(items)
    }
}
