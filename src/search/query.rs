//! The query language of `GET /api/v1/search?q=…`, kept small so no input is an error:
//! words (all must match; English stems and folded accents, so "deploying" finds
//! "deployed" and "resume" finds "résumé"), `"quoted phrases"`, `prefix*`, and `-word` or
//! `-"phrase"` to exclude. Anything else is a word.

use tantivy::query::{AllQuery, BooleanQuery, Occur, PhraseQuery, Query, RegexQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Index, Term};

use super::{Fields, Result, SearchError, FOLDED, STEMMED};

/// At most this many words and phrases in one query: each is a clause to evaluate.
const MAX_ITEMS: usize = 16;
/// A prefix shorter than this would expand to too many words.
const MIN_PREFIX_CHARS: usize = 2;

#[derive(Debug, PartialEq, Eq)]
struct Item {
    text: String,
    phrase: bool,
    prefix: bool,
    negated: bool,
}

/// Splits a query into its words and phrases.
fn items(q: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut negated = false;
        if c == '-' {
            negated = true;
            chars.next();
        }
        let mut text = String::new();
        let phrase = chars.peek() == Some(&'"');
        if phrase {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                text.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                text.push(c);
                chars.next();
            }
        }
        let mut prefix = false;
        if phrase && chars.peek() == Some(&'*') {
            chars.next();
            prefix = true;
        } else if !phrase && text.ends_with('*') {
            text.pop();
            prefix = true;
        }
        out.push(Item {
            text,
            phrase,
            prefix,
            negated,
        });
    }
    out
}

fn tokens(index: &Index, analyzer: &str, text: &str) -> Result<Vec<String>> {
    let mut analyzer = index
        .tokenizers()
        .get(analyzer)
        .ok_or_else(|| SearchError::Query(format!("no analyzer {analyzer}")))?;
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    Ok(out)
}

/// Terms (one: a term query, more: a phrase) in either of the searched fields.
fn in_text_or_files(f: Fields, words: &[String]) -> Box<dyn Query> {
    let one = |field: Field| -> Box<dyn Query> {
        if words.len() == 1 {
            Box::new(TermQuery::new(
                Term::from_field_text(field, &words[0]),
                IndexRecordOption::WithFreqs,
            ))
        } else {
            Box::new(PhraseQuery::new(
                words
                    .iter()
                    .map(|w| Term::from_field_text(field, w))
                    .collect(),
            ))
        }
    };
    Box::new(BooleanQuery::new(vec![
        (Occur::Should, one(f.text)),
        (Occur::Should, one(f.files)),
    ]))
}

/// One item as a query (`None`: nothing searchable in it, like punctuation).
fn item_query(index: &Index, f: Fields, item: &Item) -> Result<Option<Box<dyn Query>>> {
    if !item.prefix {
        let words = tokens(index, STEMMED, &item.text)?;
        if words.is_empty() {
            return Ok(None);
        }
        return Ok(Some(in_text_or_files(f, &words)));
    }
    // A prefix: the last word as typed (folded, not stemmed), the ones before it whole.
    let mut folded = tokens(index, FOLDED, &item.text)?;
    let Some(last) = folded.pop() else {
        return Ok(None);
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let before: Vec<String> = tokens(index, STEMMED, &folded.join(" "))?;
    if !before.is_empty() {
        clauses.push((Occur::Must, in_text_or_files(f, &before)));
    }
    let last_query: Box<dyn Query> = if last.chars().count() < MIN_PREFIX_CHARS {
        Box::new(TermQuery::new(
            Term::from_field_text(f.words, &last),
            IndexRecordOption::Basic,
        ))
    } else {
        // Analyzed words hold letters and digits only: nothing in them is regex syntax,
        // but escape anyway in case the analysis changes.
        let pattern = format!("{}.*", regex_escape(&last));
        Box::new(
            RegexQuery::from_pattern(&pattern, f.words)
                .map_err(|e| SearchError::Query(format!("prefix {last}*: {e}")))?,
        )
    };
    clauses.push((Occur::Must, last_query));
    Ok(Some(Box::new(BooleanQuery::new(clauses))))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The query for `q`, or `None` when it has nothing searchable (then only the filters
/// select, newest first).
pub(super) fn parse(index: &Index, f: Fields, q: &str) -> Result<Option<Box<dyn Query>>> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut positive = false;
    for item in items(q).iter().take(MAX_ITEMS) {
        if let Some(query) = item_query(index, f, item)? {
            if item.negated {
                clauses.push((Occur::MustNot, query));
            } else {
                positive = true;
                clauses.push((Occur::Must, query));
            }
        }
    }
    if clauses.is_empty() {
        return Ok(None);
    }
    if !positive {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    Ok(Some(Box::new(BooleanQuery::new(clauses))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_phrases_prefixes_and_exclusions() {
        let got = items(r#"deploy "big bad" wo* -spam -"not this" "pre fix"* "#);
        let want = [
            ("deploy", false, false, false),
            ("big bad", true, false, false),
            ("wo", false, true, false),
            ("spam", false, false, true),
            ("not this", true, false, true),
            ("pre fix", true, true, false),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (item, (text, phrase, prefix, negated)) in got.iter().zip(want) {
            assert_eq!(
                (item.text.as_str(), item.phrase, item.prefix, item.negated),
                (text, phrase, prefix, negated)
            );
        }
    }

    #[test]
    fn an_unclosed_quote_is_a_phrase_to_the_end() {
        let got = items(r#"say "hello there"#);
        assert_eq!(got[1].text, "hello there");
        assert!(got[1].phrase);
    }
}
