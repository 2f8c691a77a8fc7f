//! Synthetic English-like corpus: a seeded probabilistic grammar written for this project.
//!
//! The language is fixed (its lexicon is generated once from a constant seed); a corpus seed only
//! chooses which texts are drawn. Text `i` of a corpus is generated from its own random stream,
//! `ChaCha8Rng::seed_from_u64(seed)` with stream `i`, so `generate(seed, n)` is a prefix of
//! `generate(seed, n + 1)` and the train / validation / held-out splits, which are disjoint index
//! ranges of the same seed, are disjoint by construction.
//!
//! Grammar (weights in [`Sentence templates`](#sentence-templates)): noun phrases
//! `det adj* noun (prep NP)?` with number agreement of determiner and noun (`a`/`an` by the next
//! word's first letter), verbs that agree with their subject in number and person (present
//! `-s`, past `-ed`, future `will`, progressive `is/are ... -ing`, negation `does/do/did not`),
//! selectional preferences (each verb prefers objects of one noun class, each adjective one noun
//! class), a paragraph topic (a preferred noun class) and pronoun reuse. Content words are built
//! from syllables; function words are real English. Within each class words are drawn with Zipf
//! weights `p(rank r) ∝ 1 / (r + 1)^1.1`, so frequencies follow Zipf's law as in natural text.
//!
//! # Sentence templates
//! transitive 38 %, intransitive 14 %, copular 12 %, coordinated clauses 10 %, subordinate clause
//! 10 %, yes/no question 8 %, relative clause 8 %. A text is a paragraph of 3 to 7 sentences.
//!
//! The unigram entropy `H = -Σ_t p(t) ln p(t)` (nats per token, [`unigram_entropy`]) of the
//! tokenised corpus is the bar a language model must beat: a model that ignores context cannot
//! have a cross-entropy below it.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Seed of the fixed lexicon (the "language"); corpus seeds only choose texts.
const LEXICON_SEED: u64 = 0x5EED_1E71_C0DE_0007;
/// Number of noun classes (selectional-preference groups).
const N_CLASSES: usize = 12;
/// Zipf exponent of word frequencies within a class.
const ZIPF_EXPONENT: f64 = 1.1;

/// Errors of the corpus module.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A split size is zero.
    #[error("corpus split `{split}` has size 0; every split needs at least one text")]
    EmptySplit {
        /// Name of the split (`train`, `validation`, `held_out`).
        split: &'static str,
    },
    /// The token stream given to [`unigram_entropy`] is empty.
    #[error("cannot compute the unigram entropy of an empty token stream")]
    EmptyTokens,
}

/// Generates texts `0..n_texts` of the corpus with the given seed.
///
/// Same seed → identical texts; `generate(seed, n)` is a prefix of `generate(seed, m)` for
/// `n <= m`.
pub fn generate(seed: u64, n_texts: usize) -> Vec<String> {
    generate_range(seed, 0, n_texts)
}

/// Generates texts `start..end` of the corpus with the given seed (empty when `end <= start`).
pub fn generate_range(seed: u64, start: usize, end: usize) -> Vec<String> {
    let lexicon = Lexicon::get();
    (start..end).map(|i| lexicon.text(seed, i as u64)).collect()
}

/// Number of texts in each split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    /// Texts used for training (and for training the tokenizer).
    pub train: usize,
    /// Texts used for periodic validation during training.
    pub validation: usize,
    /// Texts kept aside for final evaluation and analyses; never seen in training.
    pub held_out: usize,
}

impl Default for SplitSizes {
    fn default() -> Self {
        Self {
            train: 8_000,
            validation: 400,
            held_out: 400,
        }
    }
}

/// The three splits of one corpus: disjoint index ranges `[0, train)`,
/// `[train, train + validation)`, `[train + validation, train + validation + held_out)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusSplits {
    /// Seed the corpus was generated with.
    pub seed: u64,
    /// Training texts.
    pub train: Vec<String>,
    /// Validation texts.
    pub validation: Vec<String>,
    /// Held-out texts.
    pub held_out: Vec<String>,
}

impl CorpusSplits {
    /// Generates the three splits with the given seed and sizes.
    pub fn generate(seed: u64, sizes: SplitSizes) -> Result<Self, CorpusError> {
        for (split, n) in [
            ("train", sizes.train),
            ("validation", sizes.validation),
            ("held_out", sizes.held_out),
        ] {
            if n == 0 {
                return Err(CorpusError::EmptySplit { split });
            }
        }
        let v0 = sizes.train;
        let h0 = v0 + sizes.validation;
        Ok(Self {
            seed,
            train: generate_range(seed, 0, v0),
            validation: generate_range(seed, v0, h0),
            held_out: generate_range(seed, h0, h0 + sizes.held_out),
        })
    }

    /// Sizes of the splits.
    pub fn sizes(&self) -> SplitSizes {
        SplitSizes {
            train: self.train.len(),
            validation: self.validation.len(),
            held_out: self.held_out.len(),
        }
    }
}

/// Plug-in unigram entropy `-Σ p ln p` in nats of a stream of symbols (token ids or words).
pub fn unigram_entropy<T, I>(symbols: I) -> Result<f64, CorpusError>
where
    T: std::hash::Hash + Eq,
    I: IntoIterator<Item = T>,
{
    let mut counts: HashMap<T, u64> = HashMap::new();
    let mut total = 0u64;
    for s in symbols {
        *counts.entry(s).or_insert(0) += 1;
        total += 1;
    }
    if total == 0 {
        return Err(CorpusError::EmptyTokens);
    }
    // Sum in a fixed order (sorted counts) so the result does not depend on hash order.
    let mut c: Vec<u64> = counts.into_values().collect();
    c.sort_unstable();
    let n = total as f64;
    Ok(c.iter()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.ln()
        })
        .sum())
}

/// Unigram entropy in nats per word of texts split on whitespace and punctuation.
pub fn word_unigram_entropy(texts: &[String]) -> Result<f64, CorpusError> {
    unigram_entropy(texts.iter().flat_map(|t| {
        t.split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '?')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
    }))
}

/// Words of the fixed lexicon, by part of speech (content words; every inflected form included).
pub fn lexicon_size() -> usize {
    Lexicon::get().size()
}

// ---------------------------------------------------------------------------------------------
// Lexicon

#[derive(Debug)]
struct Noun {
    singular: String,
    plural: String,
}

#[derive(Debug)]
struct Verb {
    base: String,
    third: String,
    past: String,
    ing: String,
    /// Preferred object class (transitive verbs) or preferred subject class (intransitive).
    class: usize,
}

/// A list of items with cumulative Zipf weights (item `r` has weight `1/(r+1)^s`).
#[derive(Debug)]
struct Zipf<T> {
    items: Vec<T>,
    cumulative: Vec<f64>,
}

impl<T> Zipf<T> {
    fn new(items: Vec<T>) -> Self {
        let mut acc = 0.0;
        let cumulative = (0..items.len())
            .map(|r| {
                acc += 1.0 / ((r + 1) as f64).powf(ZIPF_EXPONENT);
                acc
            })
            .collect();
        Self { items, cumulative }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> &T {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= u);
        &self.items[i.min(self.items.len() - 1)]
    }
}

#[derive(Debug)]
struct Lexicon {
    /// Nouns per class, each class in Zipf order.
    nouns: Vec<Zipf<Noun>>,
    /// Transitive verbs (class = preferred object class).
    transitive: Zipf<Verb>,
    /// Intransitive verbs (class = preferred subject class).
    intransitive: Zipf<Verb>,
    /// Adjectives per class.
    adjectives: Vec<Zipf<String>>,
    /// Adverbs of manner.
    adverbs: Zipf<String>,
    /// Proper names (capitalised).
    names: Zipf<String>,
    n_words: usize,
}

#[rustfmt::skip]
const FUNCTION_WORDS: &[&str] = &[
    "the", "a", "an", "this", "that", "these", "those", "some", "every", "many", "few", "no",
    "my", "his", "her", "its", "our", "their", "your", "in", "on", "under", "near", "with",
    "without", "behind", "above", "across", "through", "from", "to", "of", "for", "beside",
    "after", "before", "during", "into", "and", "but", "so", "because", "while", "when", "if",
    "although", "he", "she", "it", "they", "we", "i", "you", "is", "are", "was", "were", "will",
    "does", "do", "did", "not", "very", "quite", "rather", "often", "never", "always", "rarely",
    "who", "which", "where", "then", "there", "also", "again", "today", "yesterday", "soon",
];

#[rustfmt::skip]
const ONSETS: &[&str] = &[
    "b", "br", "bl", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "h", "j", "k", "kl", "kr", "l",
    "m", "n", "p", "pl", "pr", "r", "s", "sk", "sl", "sn", "sp", "st", "str", "t", "tr", "v",
    "w", "z", "sh", "ch", "th", "",
];
const VOWELS: &[&str] = &[
    "a", "e", "i", "o", "u", "ai", "ea", "ou", "oo", "ie", "o", "a", "e",
];
#[rustfmt::skip]
const CODAS: &[&str] = &[
    "", "", "", "", "n", "r", "l", "m", "t", "k", "nd", "st", "rn", "ld", "mp", "nt", "sk",
];

fn syllable(rng: &mut ChaCha8Rng) -> String {
    let o = ONSETS[rng.random_range(0..ONSETS.len())];
    let v = VOWELS[rng.random_range(0..VOWELS.len())];
    let c = CODAS[rng.random_range(0..CODAS.len())];
    format!("{o}{v}{c}")
}

fn sibilant_end(w: &str) -> bool {
    ["s", "sh", "ch", "x", "z"].iter().any(|e| w.ends_with(e))
}

fn add_s(w: &str) -> String {
    if sibilant_end(w) {
        format!("{w}es")
    } else {
        format!("{w}s")
    }
}

fn add_ed(w: &str) -> String {
    if w.ends_with('e') {
        format!("{w}d")
    } else {
        format!("{w}ed")
    }
}

fn add_ing(w: &str) -> String {
    match w.strip_suffix('e') {
        Some(stem) if !w.ends_with("ee") && !stem.is_empty() => format!("{stem}ing"),
        _ => format!("{w}ing"),
    }
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Draws fresh word stems that collide neither with earlier stems, their inflections nor
/// function words.
struct StemSource {
    rng: ChaCha8Rng,
    taken: HashSet<String>,
}

impl StemSource {
    fn new() -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(LEXICON_SEED),
            taken: FUNCTION_WORDS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fresh(&mut self, min_syl: usize, max_syl: usize, suffix: &str) -> String {
        loop {
            // Syllable counts skew short: 60 % min, then decreasing.
            let mut n = min_syl;
            while n < max_syl && self.rng.random::<f64>() < 0.4 {
                n += 1;
            }
            let mut w: String = (0..n).map(|_| syllable(&mut self.rng)).collect();
            w.push_str(suffix);
            let forms = [
                w.clone(),
                add_s(&w),
                add_ed(&w),
                add_ing(&w),
                format!("{w}ly"),
            ];
            if w.len() >= 3 && forms.iter().all(|f| !self.taken.contains(f)) {
                self.taken.extend(forms);
                return w;
            }
        }
    }
}

impl Lexicon {
    fn get() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(Lexicon::build)
    }

    fn build() -> Lexicon {
        let mut src = StemSource::new();
        let mut nouns: Vec<Vec<Noun>> = (0..N_CLASSES).map(|_| Vec::new()).collect();
        for i in 0..1_560 {
            let s = src.fresh(1, 3, "");
            nouns[i % N_CLASSES].push(Noun {
                plural: add_s(&s),
                singular: s,
            });
        }
        // Zipf's law of abbreviation: frequent (low-rank) words are the short ones.
        for class in &mut nouns {
            class.sort_by_key(|n| n.singular.len());
        }
        let verb = |src: &mut StemSource, i: usize| {
            let b = src.fresh(1, 2, "");
            Verb {
                third: add_s(&b),
                past: add_ed(&b),
                ing: add_ing(&b),
                base: b,
                class: i % N_CLASSES,
            }
        };
        let mut transitive: Vec<Verb> = (0..480).map(|i| verb(&mut src, i * 7)).collect();
        let mut intransitive: Vec<Verb> = (0..180).map(|i| verb(&mut src, i * 5)).collect();
        transitive.sort_by_key(|v| v.base.len());
        intransitive.sort_by_key(|v| v.base.len());
        let mut adjectives: Vec<Vec<String>> = (0..N_CLASSES).map(|_| Vec::new()).collect();
        let adj_suffixes = ["", "", "y", "ish", "ous", "ful"];
        for i in 0..480 {
            let suffix = adj_suffixes[i % adj_suffixes.len()];
            adjectives[i % N_CLASSES].push(src.fresh(1, 2, suffix));
        }
        for class in &mut adjectives {
            class.sort_by_key(String::len);
        }
        let adverbs: Vec<String> = (0..60).map(|_| src.fresh(1, 2, "ly")).collect();
        let names: Vec<String> = (0..200).map(|_| capitalise(&src.fresh(2, 3, ""))).collect();
        let n_words = nouns.iter().map(|c| 2 * c.len()).sum::<usize>()
            + 4 * (transitive.len() + intransitive.len())
            + adjectives.iter().map(Vec::len).sum::<usize>()
            + adverbs.len()
            + names.len()
            + FUNCTION_WORDS.len();
        Lexicon {
            nouns: nouns.into_iter().map(Zipf::new).collect(),
            transitive: Zipf::new(transitive),
            intransitive: Zipf::new(intransitive),
            adjectives: adjectives.into_iter().map(Zipf::new).collect(),
            adverbs: Zipf::new(adverbs),
            names: Zipf::new(names),
            n_words,
        }
    }

    fn size(&self) -> usize {
        self.n_words
    }

    fn text(&self, seed: u64, index: u64) -> String {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let mut g = Generator {
            lex: self,
            topic: rng.random_range(0..N_CLASSES),
            protagonist: None,
            rng,
        };
        let n = g.rng.random_range(3..=7);
        let sentences: Vec<String> = (0..n).map(|_| g.sentence()).collect();
        sentences.join(" ")
    }
}

// ---------------------------------------------------------------------------------------------
// Grammar

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Number {
    Singular,
    Plural,
}

/// Grammatical person/number class of a subject, for verb agreement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Agreement {
    /// he / she / it / singular noun phrase / name
    Third,
    /// they / we / I / you / plural noun phrase
    NonThird,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tense {
    Present,
    Past,
    Future,
    Progressive,
    Negated,
    NegatedPast,
}

struct Subject {
    words: String,
    agreement: Agreement,
    /// Plural for `is/are` choice (same as non-third except for "i" handled separately).
    copula_present: &'static str,
    copula_past: &'static str,
}

struct Generator<'a> {
    lex: &'a Lexicon,
    rng: ChaCha8Rng,
    topic: usize,
    /// Name introduced in this paragraph (reused and referred to by pronoun).
    protagonist: Option<(String, &'static str)>,
}

impl Generator<'_> {
    fn p(&mut self, prob: f64) -> bool {
        self.rng.random::<f64>() < prob
    }

    fn pick<'b>(&mut self, options: &[&'b str]) -> &'b str {
        options[self.rng.random_range(0..options.len())]
    }

    fn noun_class(&mut self) -> usize {
        if self.p(0.55) {
            self.topic
        } else {
            self.rng.random_range(0..N_CLASSES)
        }
    }

    /// Noun phrase of the given class and number; `allow_pp` permits one prepositional phrase.
    fn noun_phrase(&mut self, class: usize, number: Number, allow_pp: bool) -> String {
        let noun = self.lex.nouns[class].sample(&mut self.rng);
        let noun = match number {
            Number::Singular => noun.singular.clone(),
            Number::Plural => noun.plural.clone(),
        };
        let mut adjs = Vec::new();
        let n_adj = if self.p(0.45) {
            if self.p(0.2) { 2 } else { 1 }
        } else {
            0
        };
        for _ in 0..n_adj {
            let c = if self.p(0.75) {
                class
            } else {
                self.rng.random_range(0..N_CLASSES)
            };
            let a = self.lex.adjectives[c].sample(&mut self.rng).clone();
            if !adjs.contains(&a) {
                adjs.push(a);
            }
        }
        if !adjs.is_empty() && self.p(0.15) {
            adjs.insert(0, self.pick(&["very", "quite", "rather"]).to_string());
        }
        let first = adjs.first().cloned().unwrap_or_else(|| noun.clone());
        let det = match number {
            Number::Singular => {
                let d = self.pick(&[
                    "the", "the", "the", "a", "a", "this", "that", "every", "my", "his", "her",
                    "our", "their",
                ]);
                if d == "a" && first.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    d
                }
            }
            Number::Plural => self.pick(&[
                "the", "the", "some", "these", "those", "many", "few", "my", "our", "their", "",
            ]),
        };
        let mut parts: Vec<String> = Vec::new();
        if !det.is_empty() {
            parts.push(det.to_string());
        }
        parts.extend(adjs);
        parts.push(noun);
        if allow_pp && self.p(0.25) {
            parts.push(self.prep_phrase());
        }
        parts.join(" ")
    }

    fn prep_phrase(&mut self) -> String {
        let prep = self.pick(&[
            "in", "on", "under", "near", "with", "without", "behind", "above", "across", "through",
            "from", "to", "for", "beside", "after", "before", "during", "into", "of",
        ]);
        let class = self.noun_class();
        let number = self.number();
        format!("{prep} {}", self.noun_phrase(class, number, false))
    }

    fn number(&mut self) -> Number {
        if self.p(0.65) {
            Number::Singular
        } else {
            Number::Plural
        }
    }

    fn subject(&mut self, class: usize) -> Subject {
        let r = self.rng.random::<f64>();
        if r < 0.15 {
            let name = self.lex.names.sample(&mut self.rng).clone();
            let pron = if self.p(0.5) { "he" } else { "she" };
            if self.protagonist.is_none() {
                self.protagonist = Some((name.clone(), pron));
            }
            return third(name);
        }
        if r < 0.30
            && let Some((name, pron)) = self.protagonist.clone()
        {
            return third(if self.p(0.5) { name } else { pron.to_string() });
        }
        if r < 0.38 {
            let p = self.pick(&["they", "we", "i", "you"]);
            return match p {
                "i" => Subject {
                    words: "i".into(),
                    agreement: Agreement::NonThird,
                    copula_present: "am",
                    copula_past: "was",
                },
                _ => Subject {
                    words: p.into(),
                    agreement: Agreement::NonThird,
                    copula_present: "are",
                    copula_past: "were",
                },
            };
        }
        let number = self.number();
        let words = self.noun_phrase(class, number, true);
        match number {
            Number::Singular => third(words),
            Number::Plural => Subject {
                words,
                agreement: Agreement::NonThird,
                copula_present: "are",
                copula_past: "were",
            },
        }
    }

    fn tense(&mut self) -> Tense {
        let r = self.rng.random::<f64>();
        match r {
            r if r < 0.35 => Tense::Present,
            r if r < 0.70 => Tense::Past,
            r if r < 0.80 => Tense::Future,
            r if r < 0.90 => Tense::Progressive,
            r if r < 0.95 => Tense::Negated,
            _ => Tense::NegatedPast,
        }
    }

    fn verb_form(&mut self, verb: &Verb, subj: &Subject, tense: Tense) -> String {
        let third = subj.agreement == Agreement::Third;
        match tense {
            Tense::Present if third => verb.third.clone(),
            Tense::Present => verb.base.clone(),
            Tense::Past => verb.past.clone(),
            Tense::Future => format!("will {}", verb.base),
            Tense::Progressive => format!("{} {}", subj.copula_present, verb.ing),
            Tense::Negated if third => format!("does not {}", verb.base),
            Tense::Negated => format!("do not {}", verb.base),
            Tense::NegatedPast => format!("did not {}", verb.base),
        }
    }

    /// A full clause (no final punctuation).
    fn clause(&mut self) -> String {
        let r = self.rng.random::<f64>();
        if r < 0.55 {
            self.transitive_clause()
        } else if r < 0.78 {
            self.intransitive_clause()
        } else {
            self.copular_clause()
        }
    }

    fn transitive_clause(&mut self) -> String {
        let verb = self.lex.transitive.sample(&mut self.rng);
        let subj_class = self.noun_class();
        let subj = self.subject(subj_class);
        let tense = self.tense();
        let v = self.verb_form(verb, &subj, tense);
        let obj_class = if self.p(0.85) {
            verb.class
        } else {
            self.rng.random_range(0..N_CLASSES)
        };
        let number = self.number();
        let obj = self.noun_phrase(obj_class, number, true);
        let mut s = format!("{} {v} {obj}", subj.words);
        if self.p(0.2) {
            s = format!("{s} {}", self.prep_phrase());
        }
        s
    }

    fn intransitive_clause(&mut self) -> String {
        let verb = self.lex.intransitive.sample(&mut self.rng);
        let class = if self.p(0.8) {
            verb.class
        } else {
            self.noun_class()
        };
        let subj = self.subject(class);
        let tense = self.tense();
        let v = self.verb_form(verb, &subj, tense);
        let mut s = format!("{} {v}", subj.words);
        if self.p(0.35) {
            let adv = self.lex.adverbs.sample(&mut self.rng).clone();
            s = format!("{s} {adv}");
        }
        if self.p(0.4) {
            s = format!("{s} {}", self.prep_phrase());
        }
        s
    }

    fn copular_clause(&mut self) -> String {
        let class = self.noun_class();
        let subj = self.subject(class);
        let cop = if self.p(0.5) {
            subj.copula_present
        } else {
            subj.copula_past
        };
        let adj_class = if self.p(0.8) {
            class
        } else {
            self.rng.random_range(0..N_CLASSES)
        };
        let adj = self.lex.adjectives[adj_class].sample(&mut self.rng).clone();
        let degree = if self.p(0.3) {
            format!("{} ", self.pick(&["very", "quite", "rather", "not"]))
        } else {
            String::new()
        };
        format!("{} {cop} {degree}{adj}", subj.words)
    }

    fn sentence(&mut self) -> String {
        let r = self.rng.random::<f64>();
        let (body, end) = if r < 0.38 {
            (self.transitive_clause(), ".")
        } else if r < 0.52 {
            (self.intransitive_clause(), ".")
        } else if r < 0.64 {
            (self.copular_clause(), ".")
        } else if r < 0.74 {
            let a = self.clause();
            let conj = self.pick(&["and", "but", "so"]);
            let b = self.clause();
            (format!("{a}, {conj} {b}"), ".")
        } else if r < 0.84 {
            let sub = self.pick(&["because", "when", "if", "while", "although"]);
            let a = self.clause();
            let b = self.clause();
            (format!("{sub} {a}, {b}"), ".")
        } else if r < 0.92 {
            (self.question(), "?")
        } else {
            (self.relative(), ".")
        };
        format!("{}{end}", capitalise_sentence(&body))
    }

    fn question(&mut self) -> String {
        let verb = self.lex.transitive.sample(&mut self.rng);
        let class = self.noun_class();
        let subj = self.subject(class);
        let aux = if self.p(0.4) {
            "did"
        } else if subj.agreement == Agreement::Third {
            "does"
        } else {
            "do"
        };
        let number = self.number();
        let obj_class = if self.p(0.85) {
            verb.class
        } else {
            self.noun_class()
        };
        let obj = self.noun_phrase(obj_class, number, false);
        format!("{aux} {} {} {obj}", subj.words, verb.base)
    }

    fn relative(&mut self) -> String {
        let class = self.noun_class();
        let number = self.number();
        let head = self.noun_phrase(class, number, false);
        let agreement = match number {
            Number::Singular => Agreement::Third,
            Number::Plural => Agreement::NonThird,
        };
        let head_subj = Subject {
            words: head,
            agreement,
            copula_present: if agreement == Agreement::Third {
                "is"
            } else {
                "are"
            },
            copula_past: if agreement == Agreement::Third {
                "was"
            } else {
                "were"
            },
        };
        let rel_verb = self.lex.transitive.sample(&mut self.rng);
        let rel_tense = if self.p(0.5) {
            Tense::Past
        } else {
            Tense::Present
        };
        let rv = self.verb_form(rel_verb, &head_subj, rel_tense);
        let rel_obj_number = self.number();
        let rel_obj = self.noun_phrase(rel_verb.class, rel_obj_number, false);
        let main_verb = self.lex.transitive.sample(&mut self.rng);
        let tense = self.tense();
        let mv = self.verb_form(main_verb, &head_subj, tense);
        let obj_number = self.number();
        let obj = self.noun_phrase(main_verb.class, obj_number, false);
        let rel = self.pick(&["that", "which", "who"]);
        format!("{} {rel} {rv} {rel_obj} {mv} {obj}", head_subj.words)
    }
}

fn third(words: String) -> Subject {
    Subject {
        words,
        agreement: Agreement::Third,
        copula_present: "is",
        copula_past: "was",
    }
}

/// Capitalises the first letter of a sentence and the pronoun "i".
fn capitalise_sentence(s: &str) -> String {
    let words: Vec<String> = s
        .split(' ')
        .map(|w| match w {
            "i" => "I".to_string(),
            "i," => "I,".to_string(),
            _ => w.to_string(),
        })
        .collect();
    capitalise(&words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_has_a_few_thousand_words() {
        let n = lexicon_size();
        assert!((2_000..10_000).contains(&n), "lexicon size {n}");
    }

    #[test]
    fn texts_look_like_sentences() {
        let texts = generate(1, 20);
        for t in &texts {
            let first = t.chars().next().unwrap();
            assert!(first.is_uppercase(), "{t}");
            assert!(t.ends_with('.') || t.ends_with('?'), "{t}");
        }
    }

    #[test]
    fn agreement_holds_for_pronouns() {
        for t in generate(3, 200) {
            let lower = t.to_lowercase();
            assert!(!lower.contains("he do not"), "{t}");
            assert!(!lower.contains("they does"), "{t}");
            assert!(!lower.contains(" a a"), "{t}");
        }
    }

    #[test]
    fn zipf_frequencies_are_skewed() {
        let texts = generate(5, 500);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in &texts {
            for w in t.split_whitespace() {
                *counts.entry(w.to_lowercase()).or_default() += 1;
            }
        }
        let mut c: Vec<usize> = counts.into_values().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        // Rank 1 is much more frequent than rank 100, as in natural text.
        assert!(c[0] > 20 * c[100], "top {} rank100 {}", c[0], c[100]);
    }
}
