//! The languages periodic reads, by file extension, with their tree-sitter grammars (from
//! crates.io), and the categories a syntax node's kind falls in (a pattern's "kind" in the
//! table: functions, types, control flow, calls, ...), named the same across languages.

use std::path::Path;

/// A language periodic parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    /// `.rs`
    Rust,
    /// `.py`, `.pyi`
    Python,
    /// `.js`, `.mjs`, `.cjs`, `.jsx`
    JavaScript,
    /// `.ts`, `.mts`, `.cts`
    TypeScript,
    /// `.tsx`
    Tsx,
    /// `.go`
    Go,
}

impl Lang {
    /// Every language, in the order of their ids.
    pub const ALL: [Lang; 6] = [
        Lang::Rust,
        Lang::Python,
        Lang::JavaScript,
        Lang::TypeScript,
        Lang::Tsx,
        Lang::Go,
    ];

    /// The language of a file, by its extension.
    pub fn of_path(p: &Path) -> Option<Lang> {
        let ext = p.extension()?.to_str()?;
        Some(match ext {
            "rs" => Lang::Rust,
            "py" | "pyi" => Lang::Python,
            "js" | "mjs" | "cjs" | "jsx" => Lang::JavaScript,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "go" => Lang::Go,
            _ => return None,
        })
    }

    /// The language called `name` (`rust`, `python`, `javascript`/`js`, `typescript`/`ts`,
    /// `tsx`, `go`).
    pub fn named(name: &str) -> Option<Lang> {
        Some(match name.to_ascii_lowercase().as_str() {
            "rust" | "rs" => Lang::Rust,
            "python" | "py" => Lang::Python,
            "javascript" | "js" | "jsx" => Lang::JavaScript,
            "typescript" | "ts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "go" | "golang" => Lang::Go,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::Tsx => "tsx",
            Lang::Go => "go",
        }
    }

    /// Its id in the index.
    pub fn id(self) -> u32 {
        Lang::ALL.iter().position(|l| *l == self).unwrap_or(0) as u32
    }

    /// The language of an id in the index.
    pub fn from_id(id: u32) -> Option<Lang> {
        Lang::ALL.get(id as usize).copied()
    }

    /// Its tree-sitter grammar.
    pub fn grammar(self) -> tree_sitter::Language {
        match self {
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
        }
    }
}

/// The category of a pattern, from its root node's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Functions, methods, closures, lambdas.
    Function,
    /// Structs, classes, enums, traits, interfaces, impls, type declarations.
    Type,
    /// if, match/switch, loops, try, return.
    Control,
    /// Calls and invocations (macro calls too).
    Call,
    /// Blocks and bodies.
    Block,
    /// Bindings: let, assignments, variable declarations.
    Binding,
    /// Imports.
    Import,
    /// Any other expression.
    Expression,
    /// Anything else.
    Other,
}

impl Kind {
    /// Every kind, in id order.
    pub const ALL: [Kind; 9] = [
        Kind::Function,
        Kind::Type,
        Kind::Control,
        Kind::Call,
        Kind::Block,
        Kind::Binding,
        Kind::Import,
        Kind::Expression,
        Kind::Other,
    ];

    /// The category of a node kind (a grammar's name for it).
    pub fn of_node(kind: &str) -> Kind {
        // Whole words of the kind's name (`if_statement` is `if` and `statement`), so that
        // `modifiers` is not `if`.
        let has = |words: &[&str]| kind.split('_').any(|w| words.contains(&w));
        if has(&["import", "use", "extern", "package"]) && !has(&["function"]) {
            Kind::Import
        } else if has(&["function", "method", "closure", "lambda", "func"]) {
            Kind::Function
        } else if has(&[
            "struct",
            "class",
            "enum",
            "trait",
            "impl",
            "interface",
            "type",
            "union",
        ]) {
            Kind::Type
        } else if has(&[
            "if", "elif", "else", "match", "switch", "for", "while", "loop", "try", "return",
            "select", "with", "case",
        ]) {
            Kind::Control
        } else if has(&["call", "invocation", "macro", "new"]) {
            Kind::Call
        } else if has(&["block", "body", "compound", "suite"]) {
            Kind::Block
        } else if has(&[
            "let",
            "assignment",
            "declaration",
            "declarator",
            "var",
            "const",
            "lexical",
            "short",
        ]) {
            Kind::Binding
        } else if has(&[
            "expression",
            "binary",
            "unary",
            "await",
            "index",
            "field",
            "arguments",
        ]) {
            Kind::Expression
        } else {
            Kind::Other
        }
    }

    /// Its name (`function`, `type`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::Type => "type",
            Kind::Control => "control",
            Kind::Call => "call",
            Kind::Block => "block",
            Kind::Binding => "binding",
            Kind::Import => "import",
            Kind::Expression => "expression",
            Kind::Other => "other",
        }
    }

    /// The kind called `name`.
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its id in the index.
    pub fn id(self) -> u32 {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u32
    }

    /// The kind of an id in the index.
    pub fn from_id(id: u32) -> Kind {
        Kind::ALL.get(id as usize).copied().unwrap_or(Kind::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_kinds_fall_in_the_categories_across_languages() {
        assert_eq!(Kind::of_node("function_item"), Kind::Function);
        assert_eq!(Kind::of_node("function_definition"), Kind::Function);
        assert_eq!(Kind::of_node("arrow_function"), Kind::Function);
        assert_eq!(Kind::of_node("method_declaration"), Kind::Function);
        assert_eq!(Kind::of_node("struct_item"), Kind::Type);
        assert_eq!(Kind::of_node("class_definition"), Kind::Type);
        assert_eq!(Kind::of_node("if_statement"), Kind::Control);
        assert_eq!(Kind::of_node("match_expression"), Kind::Control);
        assert_eq!(Kind::of_node("call_expression"), Kind::Call);
        assert_eq!(Kind::of_node("block"), Kind::Block);
        assert_eq!(Kind::of_node("let_declaration"), Kind::Binding);
        assert_eq!(Kind::of_node("import_from_statement"), Kind::Import);
        assert_eq!(Kind::of_node("binary_expression"), Kind::Expression);
        assert_eq!(Kind::of_node("modifiers"), Kind::Other, "whole words only");
        assert_eq!(Kind::of_node("use_declaration"), Kind::Import);
        for k in Kind::ALL {
            assert_eq!(Kind::from_id(k.id()), k);
            assert_eq!(Kind::named(k.name()), Some(k));
        }
    }
}
