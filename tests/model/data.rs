//! Tokenizers, chat templates, JSONL datasets, batching and the built-in corpus.

use rlhf::data::{
    builtin_chat, builtin_corpus, builtin_examples, builtin_qa, encode_chat, encode_chat_prompt, load_sft_jsonl, render_chat, Batch, Batcher, ByteTokenizer,
    ChatTemplate, Example, Message, Rng, Tokenizer,
};
use rlhf::Error;
use serde_json::json;
use std::path::{Path, PathBuf};

const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// ---------------------------------------------------------------------------------------------
// helpers

/// GPT-2's byte -> printable character map.
fn byte_to_char() -> Vec<char> {
    let mut map = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    map
}

/// Writes a small byte-level BPE `tokenizer.json` (GPT-2 style, a few merges) and, if given, a
/// `tokenizer_config.json`. With `bos_post`, a Llama-style post-processor prepends `<s>`.
fn write_hf_tokenizer(dir: &Path, config: Option<serde_json::Value>, bos_post: bool) {
    let chars = byte_to_char();
    let mut vocab = serde_json::Map::new();
    for (i, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("H", "e"), ("He", "ll"), ("Hell", "o"), ("Ġ", "c"), ("a", "t"), ("Ġc", "at")];
    let mut next = 256;
    for (a, b) in merges {
        let m = format!("{a}{b}");
        if !vocab.contains_key(&m) {
            vocab.insert(m, json!(next));
            next += 1;
        }
    }
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"];
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(k, s)| {
            json!({"id": next + k, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let bos_id = next + 3;
    let post = if bos_post {
        json!({"type": "TemplateProcessing",
               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
               "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                        {"Sequence": {"id": "B", "type_id": 1}}],
               "special_tokens": {"<s>": {"id": "<s>", "ids": [bos_id], "tokens": ["<s>"]}}})
    } else {
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
    };
    let merges: Vec<_> = merges.iter().map(|(a, b)| json!([a, b])).collect();
    let tj = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tj).unwrap()).unwrap();
    if let Some(cfg) = config {
        std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    }
}

fn chatml_tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    write_hf_tokenizer(
        dir.path(),
        Some(json!({"chat_template": CHATML, "eos_token": {"content": "<|im_end|>", "special": true},
                    "bos_token": null, "pad_token": "<|endoftext|>"})),
        false,
    );
    let tok = Tokenizer::load(dir.path()).unwrap();
    (dir, tok)
}

/// The decoded text of each maximal run of masked tokens.
fn masked_runs(tok: &Tokenizer, ids: &[u32], mask: &[bool]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut cur: Vec<u32> = Vec::new();
    for (&id, &m) in ids.iter().zip(mask) {
        if m {
            cur.push(id);
        } else if !cur.is_empty() {
            runs.push(tok.decode(&cur).unwrap());
            cur.clear();
        }
    }
    if !cur.is_empty() {
        runs.push(tok.decode(&cur).unwrap());
    }
    runs
}

fn conversation() -> Vec<Message> {
    vec![
        Message::system("Be brief."),
        Message::user("Hi, the cat?"),
        Message::assistant("Hello the cat"),
        Message::user("And?"),
        Message::assistant("Hell, the cat sat."),
    ]
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// rng

#[test]
fn rng_is_deterministic_and_sane() {
    let mut a = Rng::new(7);
    let mut b = Rng::new(7);
    let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs[..10], (0..10).map(|_| Rng::new(8).next_u64()).collect::<Vec<_>>()[..]);

    let mut r = Rng::new(1);
    let n = 100_000;
    let (mut sum, mut sq, mut usum) = (0f64, 0f64, 0f64);
    for _ in 0..n {
        let u = r.next_f32();
        assert!((0.0..1.0).contains(&u));
        usum += u as f64;
        let z = r.normal() as f64;
        assert!(z.is_finite());
        sum += z;
        sq += z * z;
    }
    assert!((usum / n as f64 - 0.5).abs() < 0.01);
    assert!((sum / n as f64).abs() < 0.02, "mean {}", sum / n as f64);
    assert!((sq / n as f64 - 1.0).abs() < 0.03, "var {}", sq / n as f64);

    let mut v: Vec<usize> = (0..50).collect();
    r.shuffle(&mut v);
    assert_ne!(v, (0..50).collect::<Vec<_>>());
    let mut s = v.clone();
    s.sort();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
    for _ in 0..1000 {
        assert!(r.below(3) < 3);
        let x = r.range(-2, 2);
        assert!((-2..=2).contains(&x));
    }
}

// ---------------------------------------------------------------------------------------------
// byte tokenizer

#[test]
fn byte_tokenizer_round_trip() {
    let tok = Tokenizer::byte_level();
    assert_eq!(tok.vocab_size(), 264);
    assert_eq!(tok.vocab_size() % 8, 0);
    assert_eq!(tok.bos_id(), Some(256));
    assert_eq!(tok.eos_id(), Some(257));
    assert_eq!(tok.pad_id(), Some(258));
    assert_eq!(tok.token_to_id("<|user|>"), Some(ByteTokenizer::USER));
    assert_eq!(tok.token_to_id("<|assistant|>"), Some(ByteTokenizer::ASSISTANT));
    assert_eq!(tok.token_to_id("<|end|>"), Some(ByteTokenizer::END));
    assert_eq!(tok.token_to_id("a"), Some(97));

    let text = "héllo wörld 🎉\n<|user|>x<|end|><|eos|> <| not special |>";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.contains(&ByteTokenizer::USER));
    assert!(ids.contains(&ByteTokenizer::END));
    assert!(ids.contains(&ByteTokenizer::EOS));
    let specials = ids.iter().filter(|&&i| i >= 256).count();
    assert_eq!(specials, 3);
    assert_eq!(ids.len(), text.len() - "<|user|>".len() - "<|end|>".len() - "<|eos|>".len() + 3);
    assert_eq!(tok.decode(&ids).unwrap(), text);

    let with_bos = tok.encode("ab", true).unwrap();
    assert_eq!(with_bos, vec![256, 97, 98]);
    assert_eq!(tok.decode(&with_bos).unwrap(), "<|bos|>ab");
    assert_eq!(tok.decode_with(&with_bos, true).unwrap(), "ab");

    // A cut multi-byte character decodes lossily instead of failing.
    let e = tok.encode("é", false).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(tok.decode(&e[..1]).unwrap(), "\u{FFFD}");
    // Reserved id inside the vocabulary decodes to nothing; beyond it is an error.
    assert_eq!(tok.decode(&[263]).unwrap(), "");
    assert!(matches!(tok.decode(&[264]), Err(Error::Tokenizer(_))));

    assert_eq!(tok.stop_ids(), vec![ByteTokenizer::EOS, ByteTokenizer::END]);
    assert!(tok.chat_template().is_some());
}

#[test]
fn byte_tokenizer_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    Tokenizer::byte_level().save(dir.path(), Some(256)).unwrap();
    assert!(dir.path().join("rlhf_tokenizer.json").is_file());
    let tok = Tokenizer::load(dir.path()).unwrap();
    assert!(tok.is_byte_level(), "the marker wins over tokenizer.json");
    // The standard files express the same tokenizer for Hugging Face tools.
    let hf = Tokenizer::load(&dir.path().join("tokenizer.json")).unwrap();
    assert!(!hf.is_byte_level());
    for text in ["plain", "café 🎉 中文", "<|user|>\nhi<|end|>\n"] {
        assert_eq!(hf.encode(text, true).unwrap(), tok.encode(text, true).unwrap(), "{text:?}");
        assert_eq!(hf.encode(text, false).unwrap(), tok.encode(text, false).unwrap(), "{text:?}");
    }
    assert_eq!((hf.bos_id(), hf.eos_id(), hf.pad_id()), (tok.bos_id(), tok.eos_id(), tok.pad_id()));
    assert_eq!(hf.chat_template(), tok.chat_template());
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_max_length"], 256);

    let empty = tempfile::tempdir().unwrap();
    let err = Tokenizer::load(empty.path()).unwrap_err().to_string();
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
    assert!(err.contains("tokenizer.json"), "{err}");

    let missing = empty.path().join("nope");
    let err = Tokenizer::load(&missing).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");

    std::fs::write(empty.path().join("rlhf_tokenizer.json"), r#"{"type": "wordpiece"}"#).unwrap();
    let err = Tokenizer::load(empty.path()).unwrap_err().to_string();
    assert!(err.contains("rlhf_tokenizer.json") && err.contains("wordpiece"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Hugging Face tokenizer

#[test]
fn hf_tokenizer_load_encode_decode_save() {
    let (dir, tok) = chatml_tokenizer();
    assert!(!tok.is_byte_level());
    let text = "Hello the cat, héllo!";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.len() < text.len(), "merges should apply: {ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.token_to_id("Hello"), Some(262));

    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    let eot = tok.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(tok.eos_id(), Some(im_end));
    assert_eq!(tok.pad_id(), Some(eot));
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.vocab_size(), 270);
    assert_eq!(im_end, 268);
    // Special tokens in the text are single ids.
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(ids[0], tok.token_to_id("<|im_start|>").unwrap());
    assert_eq!(*ids.last().unwrap(), im_end);
    assert_eq!(tok.decode_with(&ids, true).unwrap(), "user\nHi");
    assert!(tok.decode(&[tok.vocab_size() as u32]).is_err());
    assert!(tok.stop_ids().contains(&im_end));
    assert_eq!(tok.chat_template(), Some(CHATML));

    // Save and load back: same encodings, same template and special tokens.
    let out = dir.path().join("saved");
    tok.save(&out, None).unwrap();
    let back = Tokenizer::load(&out).unwrap();
    assert_eq!(back.encode(text, true).unwrap(), tok.encode(text, true).unwrap());
    assert_eq!(back.chat_template(), Some(CHATML));
    assert_eq!(back.eos_id(), tok.eos_id());
    assert_eq!(back.pad_id(), tok.pad_id());
    // A tokenizer.json path works as well as its folder.
    let by_file = Tokenizer::load(&out.join("tokenizer.json")).unwrap();
    assert_eq!(by_file.chat_template(), Some(CHATML));
}

#[test]
fn hf_tokenizer_config_variants() {
    // List-form template: the one named "default" is used.
    let dir = tempfile::tempdir().unwrap();
    write_hf_tokenizer(
        dir.path(),
        Some(json!({"chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": CHATML}],
                    "eos_token": "<|endoftext|>", "bos_token": {"content": "<s>"}})),
        true,
    );
    let tok = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tok.chat_template(), Some(CHATML));
    assert_eq!(tok.bos_id(), tok.token_to_id("<s>"));
    assert_eq!(tok.eos_id(), tok.token_to_id("<|endoftext|>"));
    // The post-processor adds bos only when asked to.
    let with = tok.encode("the cat", true).unwrap();
    let without = tok.encode("the cat", false).unwrap();
    assert_eq!(with[0], tok.bos_id().unwrap());
    assert_eq!(&with[1..], &without[..]);
    // Saving keeps the other named templates.
    let out = dir.path().join("saved");
    tok.save(&out, None).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(cfg["chat_template"].is_array());

    // No config at all: eos guessed from the vocabulary, no template.
    let bare = tempfile::tempdir().unwrap();
    write_hf_tokenizer(bare.path(), None, false);
    let tok = Tokenizer::load(bare.path()).unwrap();
    assert_eq!(tok.eos_id(), tok.token_to_id("<|endoftext|>"));
    assert_eq!(tok.chat_template(), None);

    // chat_template.jinja takes precedence.
    std::fs::write(bare.path().join("chat_template.jinja"), CHATML).unwrap();
    assert_eq!(Tokenizer::load(bare.path()).unwrap().chat_template(), Some(CHATML));

    // A broken tokenizer.json names the file.
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let err = Tokenizer::load(broken.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// chat templates

#[test]
fn chatml_render_and_generation_prompt() {
    let (_dir, tok) = chatml_tokenizer();
    let msgs = vec![Message::user("Hi"), Message::assistant("Hello")];
    assert_eq!(render_chat(&tok, &msgs, false).unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n");
    assert_eq!(render_chat(&tok, &msgs[..1], true).unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    let prompt = encode_chat_prompt(&tok, &msgs[..1]).unwrap();
    assert_eq!(tok.decode(&prompt).unwrap(), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn chatml_loss_mask_covers_assistant_content_and_end_marker() {
    let (_dir, tok) = chatml_tokenizer();
    let msgs = conversation();
    let (ids, mask) = encode_chat(&tok, &msgs).unwrap();
    assert_eq!(ids.len(), mask.len());
    let full = render_chat(&tok, &msgs, false).unwrap();
    assert_eq!(ids, tok.encode(&full, false).unwrap());
    assert_eq!(masked_runs(&tok, &ids, &mask), vec!["Hello the cat<|im_end|>".to_string(), "Hell, the cat sat.<|im_end|>".to_string()]);
    // Every token of the assistant text is masked, nothing else is.
    let n_masked = mask.iter().filter(|&&m| m).count();
    let expect = tok.encode("Hello the cat", false).unwrap().len() + tok.encode("Hell, the cat sat.", false).unwrap().len() + 2;
    assert_eq!(n_masked, expect);
}

#[test]
fn byte_tokenizer_chat_template_and_mask() {
    let tok = Tokenizer::byte_level();
    let msgs = vec![Message::system("S"), Message::user("Hi"), Message::assistant("Hé!")];
    let text = render_chat(&tok, &msgs, false).unwrap();
    assert_eq!(text, "<|bos|><|system|>\nS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHé!<|end|>\n");
    assert_eq!(render_chat(&tok, &msgs[..2], true).unwrap(), "<|bos|><|system|>\nS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n");
    let (ids, mask) = encode_chat(&tok, &msgs).unwrap();
    assert_eq!(ids[0], ByteTokenizer::BOS);
    assert_eq!(masked_runs(&tok, &ids, &mask), vec!["Hé!<|end|>".to_string()]);
    assert_eq!(mask.iter().filter(|&&m| m).count(), "Hé!".len() + 1);

    let err = render_chat(&tok, &[Message::new("tool", "x")], false).unwrap_err().to_string();
    assert!(err.contains("unknown role: tool"), "{err}");
}

#[test]
fn fallback_template_for_hf_without_one() {
    let dir = tempfile::tempdir().unwrap();
    write_hf_tokenizer(dir.path(), None, false);
    let tok = Tokenizer::load(dir.path()).unwrap();
    let msgs = vec![Message::user("Hi"), Message::assistant("the cat")];
    let text = render_chat(&tok, &msgs, false).unwrap();
    assert_eq!(text, "user:\nHi\nassistant:\nthe cat<|endoftext|>\n");
    assert_eq!(render_chat(&tok, &msgs[..1], true).unwrap(), "user:\nHi\nassistant:\n");
    let (ids, mask) = encode_chat(&tok, &msgs).unwrap();
    assert_eq!(masked_runs(&tok, &ids, &mask), vec!["the cat<|endoftext|>".to_string()]);
}

#[test]
fn template_python_compat() {
    let t = ChatTemplate::from_source(
        concat!(
            "{{ messages[0]['content'].strip() }}|{{ messages[0].content.lstrip(' x') }}|",
            "{{ 'a,b,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'k=v=w'.split('=', 1) }}|",
            "{{ messages[0]['role'].upper() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|",
            "{{ {'b': [1, 2], 'a': 'x<y'} | tojson }}|{{ 'x'.replace('x', 'yy') }}|",
            "{% for k, v in {'q': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ {'q': 1}.get('z', 'd') }}|",
            "{% generation %}{{ bos_token }}{% endgeneration %}|{{ eos_token }}|",
            "{% if tools is not none %}tools{% else %}notools{% endif %}|{{ messages | length }}",
            "{% if add_generation_prompt %}!{% endif %}"
        ),
        Some("<s>"),
        Some("</s>"),
        None,
    )
    .unwrap();
    let out = t.render(&[Message::user("  x hi  ")], true).unwrap();
    assert_eq!(
        out,
        concat!(
            "x hi|hi  |[\"a\", \"b\", \"c\"]|[\"a\", \"b\"]|[\"k\", \"v=w\"]|USER|True|True|",
            "{\"a\": \"x<y\", \"b\": [1, 2]}|yy|q=1|d|<s>|</s>|notools|1!"
        )
    );

    // raise_exception surfaces the template's message.
    let t = ChatTemplate::from_source("{{ raise_exception('roles must alternate') }}", None, None, None).unwrap();
    let err = t.render(&[], false).unwrap_err().to_string();
    assert!(err.contains("roles must alternate"), "{err}");
    // A syntax error is reported, not a panic.
    assert!(ChatTemplate::from_source("{% for %}", None, None, None).is_err());
}

#[test]
fn trim_and_lstrip_blocks_like_transformers() {
    let src = "{% for message in messages %}\n    {% if message.role == 'user' %}\nU: {{ message.content }}\n    {% else %}\nA: {{ message.content }}\n    {% endif %}\n{% endfor %}\n";
    let t = ChatTemplate::from_source(src, None, None, None).unwrap();
    let out = t.render(&[Message::user("a"), Message::assistant("b")], false).unwrap();
    assert_eq!(out, "U: a\nA: b\n");
}

// ---------------------------------------------------------------------------------------------
// JSONL

#[test]
fn jsonl_formats_byte_tokenizer() {
    let tok = Tokenizer::byte_level();
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        json!({"text": "hi"}).to_string(),
        String::new(),
        json!({"input_ids": [1, 2, 3], "id": 7}).to_string(),
        json!({"prompt": "Q", "completion": "A"}).to_string(),
        json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}).to_string(),
        "   ".to_string(),
        json!({"input_ids": [5, 6, 7], "loss_mask": [0, 0, 1]}).to_string(),
    ];
    let path = write_file(dir.path(), "sft.jsonl", &(lines.join("\n") + "\n"));
    let ex = load_sft_jsonl(&path, &tok).unwrap();
    assert_eq!(ex.len(), 5);

    assert_eq!(ex[0].ids, vec![256, b'h' as u32, b'i' as u32, 257]);
    assert_eq!(ex[0].loss_mask, vec![true; 4]);

    assert_eq!(ex[1], Example::all_supervised(vec![1, 2, 3]));

    assert_eq!(ex[2].ids, vec![256, b'Q' as u32, b'A' as u32, 257]);
    assert_eq!(ex[2].loss_mask, vec![false, false, true, true]);
    assert_eq!(ex[2].n_targets(), 2);

    let msgs = vec![Message::user("Hi"), Message::assistant("Yo")];
    let (ids, mask) = encode_chat(&tok, &msgs).unwrap();
    assert_eq!(ex[3].ids, ids);
    assert_eq!(ex[3].loss_mask, mask);
    assert_eq!(masked_runs(&tok, &ex[3].ids, &ex[3].loss_mask), vec!["Yo<|end|>".to_string()]);

    assert_eq!(ex[4].loss_mask, vec![false, false, true]);
}

#[test]
fn jsonl_formats_hf_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    write_hf_tokenizer(dir.path(), Some(json!({"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": "<s>"})), true);
    let tok = Tokenizer::load(dir.path()).unwrap();
    let bos = tok.bos_id().unwrap();
    let eos = tok.eos_id().unwrap();
    let lines = [
        json!({"text": "the cat"}).to_string(),
        json!({"prompt": "Hello", "completion": " the cat"}).to_string(),
        json!({"messages": conversation()}).to_string(),
    ];
    let path = write_file(dir.path(), "sft.jsonl", &lines.join("\n"));
    let ex = load_sft_jsonl(&path, &tok).unwrap();
    assert_eq!(ex[0].ids[0], bos);
    assert_eq!(*ex[0].ids.last().unwrap(), eos);
    assert_eq!(tok.decode_with(&ex[0].ids, true).unwrap(), "the cat");

    let p = &ex[1];
    let n_prompt = p.loss_mask.iter().take_while(|&&m| !m).count();
    assert_eq!(tok.decode(&p.ids[..n_prompt]).unwrap(), "<s>Hello");
    assert_eq!(tok.decode(&p.ids[n_prompt..]).unwrap(), " the cat<|im_end|>");
    assert!(p.loss_mask[n_prompt..].iter().all(|&m| m));

    // Chat lines are rendered by the template; no extra bos from the post-processor.
    let (ids, mask) = encode_chat(&tok, &conversation()).unwrap();
    assert_eq!(ex[2].ids, ids);
    assert_eq!(ex[2].loss_mask, mask);
    assert_ne!(ex[2].ids[0], bos);
}

fn expect_line_error(tok: &Tokenizer, content: &str, line: usize, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "bad.jsonl", content);
    let err = load_sft_jsonl(&path, tok).unwrap_err();
    assert!(matches!(err, Error::Line { .. }), "{err:?}");
    let msg = err.to_string();
    let prefix = format!("{}:{line}:", path.display());
    assert!(msg.starts_with(&prefix), "expected `{prefix}` in: {msg}");
    assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
}

#[test]
fn jsonl_bad_inputs_name_file_and_line() {
    let tok = Tokenizer::byte_level();
    let good = json!({"text": "ok"}).to_string();
    let cases: Vec<(String, &str)> = vec![
        ("{\"text\": \"unterminated".into(), "invalid JSON"),
        ("[1, 2]".into(), "expected a JSON object, found an array"),
        ("\"text\"".into(), "expected a JSON object, found a string"),
        (json!({"txt": "x"}).to_string(), "expected one of the keys"),
        (json!({"text": 5}).to_string(), "`text` must be a string, found a number"),
        (json!({"text": ""}).to_string(), "`text` is empty"),
        (json!({"input_ids": []}).to_string(), "`input_ids` is empty"),
        (json!({"input_ids": "1 2"}).to_string(), "`input_ids` must be an array"),
        (json!({"input_ids": [1, 264]}).to_string(), "input_ids[1] = 264 is outside the vocabulary"),
        (json!({"input_ids": [1, -3]}).to_string(), "input_ids[1] must be a non-negative integer"),
        (json!({"input_ids": [1]}).to_string(), "at least 2"),
        (json!({"input_ids": [1, 2], "loss_mask": [1]}).to_string(), "`loss_mask` has 1 entries"),
        (json!({"prompt": "x"}).to_string(), "missing `completion`"),
        (json!({"prompt": "x", "completion": ""}).to_string(), "`completion` is empty"),
        (json!({"prompt": ["x"], "completion": "y"}).to_string(), "`prompt` must be a string, found an array"),
        (json!({"messages": []}).to_string(), "`messages` is empty"),
        (json!({"messages": {"role": "user"}}).to_string(), "`messages` must be an array"),
        (json!({"messages": [{"role": "tool", "content": "x"}]}).to_string(), "unknown role `tool`"),
        (json!({"messages": [{"role": "user"}]}).to_string(), "messages[0]: missing `content`"),
        (json!({"messages": [{"role": "user", "content": 3}]}).to_string(), "`content` must be a string"),
        (json!({"messages": [{"role": "user", "content": "x"}]}).to_string(), "no non-empty assistant message"),
        (json!({"text": "x", "messages": []}).to_string(), "more than one of the keys"),
    ];
    for (bad, needle) in &cases {
        expect_line_error(&tok, &format!("{good}\n{bad}\n{good}\n"), 2, needle);
    }
    // Line numbers count blank lines.
    expect_line_error(&tok, &format!("\n\n{good}\n\n[1]\n"), 5, "expected a JSON object");

    // Missing file: an I/O error naming it.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let err = load_sft_jsonl(&missing, &tok).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("missing.jsonl"), "{err}");

    // Empty file (or only blank lines): an error naming the file.
    for content in ["", "\n  \n\n"] {
        let path = write_file(dir.path(), "empty.jsonl", content);
        let err = load_sft_jsonl(&path, &tok).unwrap_err();
        assert!(matches!(err, Error::File { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.jsonl"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// batches

#[test]
fn batch_shifts_targets_masks_and_pads() {
    let a = Example::new(vec![10, 11, 12, 13, 14], vec![false, false, true, true, true]).unwrap();
    let b = Example::all_supervised(vec![20, 21, 22]);
    let batch = Batch::from_examples([&a, &b], 16, 99);
    assert_eq!((batch.b, batch.t), (2, 4));
    assert_eq!(batch.inputs, vec![10, 11, 12, 13, 20, 21, 99, 99]);
    assert_eq!(batch.targets, vec![-1, 12, 13, 14, 21, 22, -1, -1]);
    assert_eq!(batch.positions, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    assert_eq!(batch.n_supervised, 5);

    // Truncation to seq_len + 1 tokens.
    let batch = Batch::from_examples([&a, &b], 2, 0);
    assert_eq!((batch.b, batch.t), (2, 2));
    assert_eq!(batch.inputs, vec![10, 11, 20, 21]);
    assert_eq!(batch.targets, vec![-1, 12, 21, 22]);
    assert_eq!(batch.n_supervised, 3);
}

#[test]
fn batcher_is_deterministic_and_resumable() {
    let examples: Vec<Example> = (0..10u32).map(|i| Example::all_supervised(vec![i, i + 100, i + 200])).collect();
    let run = |seed: u64| {
        let mut b = Batcher::new(examples.clone(), seed, 0).unwrap();
        (0..7).map(|_| b.next_batch(3, 8)).collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));

    // One epoch visits every example exactly once.
    let mut b = Batcher::new(examples.clone(), 5, 0).unwrap();
    let mut firsts: Vec<i32> = (0..5).flat_map(|_| b.next_batch(2, 8).inputs.chunks(2).map(|r| r[0]).collect::<Vec<_>>()).collect();
    assert_eq!(b.epoch(), 0);
    assert_eq!(b.position(), 10);
    firsts.sort();
    assert_eq!(firsts, (0..10).collect::<Vec<_>>());
    let _ = b.next_batch(1, 8);
    assert_eq!(b.epoch(), 1);

    // Resume from a stored position.
    let mut a = Batcher::new(examples.clone(), 9, 0).unwrap();
    for _ in 0..4 {
        a.next_batch(3, 8);
    }
    let pos = a.position();
    let expected: Vec<Batch> = (0..5).map(|_| a.next_batch(3, 8)).collect();
    let mut r = Batcher::new(examples.clone(), 9, 0).unwrap();
    r.seek(pos);
    let got: Vec<Batch> = (0..5).map(|_| r.next_batch(3, 8)).collect();
    assert_eq!(expected, got);

    assert!(Batcher::new(Vec::new(), 0, 0).is_err());
}

// ---------------------------------------------------------------------------------------------
// built-in corpus

#[test]
fn builtin_corpus_is_deterministic() {
    let a = builtin_corpus(300, 1);
    assert_eq!(a.len(), 300);
    assert_eq!(a, builtin_corpus(300, 1));
    assert_ne!(a, builtin_corpus(300, 2));
    assert_eq!(&a[..50], &builtin_corpus(50, 1)[..]);
    assert!(a.iter().all(|s| !s.is_empty() && s.is_ascii() && s.len() < 120));
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert!(distinct.len() > 150, "{}", distinct.len());
    assert!(a.iter().any(|s| s.contains(" plus ")));

    let tok = Tokenizer::byte_level();
    let ex = builtin_examples(&tok, 20, 3).unwrap();
    assert_eq!(ex.len(), 20);
    assert!(ex.iter().all(|e| e.ids[0] == 256 && *e.ids.last().unwrap() == 257));

    let qa = builtin_qa(10, 4);
    for q in &qa {
        assert!(q.question.starts_with("What is ") && q.question.ends_with('?'));
        assert!(q.answer.parse::<i64>().is_ok());
    }
    let chats = builtin_chat(10, 4);
    assert_eq!(chats[0][0].content, qa[0].question);
    assert!(chats[0][1].content.ends_with(&format!("is {}.", qa[0].answer)));
    let (_, mask) = encode_chat(&tok, &chats[0]).unwrap();
    assert!(mask.iter().any(|&m| m));
}

#[test]
fn template_features_of_real_chat_templates() {
    // Whitespace control, namespace, slicing, loop variables, `is defined`, `trim`, a system
    // message pulled out of the list, a default system prompt, alternation check.
    let src = r#"
{%- if messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] | trim -%}
    {%- set rest = messages[1:] -%}
{%- else -%}
    {%- set system = 'You are helpful.' -%}
    {%- set rest = messages -%}
{%- endif -%}
{%- set ns = namespace(turns=0) -%}
{{- bos_token }}<|im_start|>system
{{ system }}<|im_end|>
{% for message in rest %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- set ns.turns = ns.turns + 1 -%}
    <|im_start|>{{ message.role }}
{{ message.content | trim }}<|im_end|>
{% if loop.last and message.tool_calls is defined %}never{% endif %}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
{%- if ns.turns > 99 %}many{% endif -%}"#;
    let t = ChatTemplate::from_source(src, Some("<s>"), None, None).unwrap();
    let out = t.render(&[Message::user(" Hi "), Message::assistant("Yo")], false).unwrap();
    assert_eq!(out, "<s><|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
    let out = t.render(&[Message::system("Sys "), Message::user("Hi")], true).unwrap();
    assert_eq!(out, "<s><|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    let err = t.render(&[Message::assistant("x")], false).unwrap_err().to_string();
    assert!(err.contains("roles must alternate"), "{err}");

    // The mask still covers exactly the assistant text with such a template.
    let (_dir, mut tok) = chatml_tokenizer();
    tok.set_chat_template(Some(src.to_string())).unwrap();
    let (ids, mask) = encode_chat(&tok, &[Message::user("Hi"), Message::assistant("the cat"), Message::user("?"), Message::assistant("Hello")]).unwrap();
    assert_eq!(masked_runs(&tok, &ids, &mask), vec!["the cat<|im_end|>".to_string(), "Hello<|im_end|>".to_string()]);
}
