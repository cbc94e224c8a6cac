//! The built-in byte tokenizer written as a standard Hugging Face tokenizer: a `tokenizer.json`
//! that the `tokenizers` library (Rust or Python) and `AutoTokenizer` load, encoding every string
//! to the ids [`ByteTokenizer`] gives, and its `tokenizer_config.json`.
//!
//! The expression: GPT-2's byte-to-character table as the pre-tokenizer (`ByteLevel`, no regex
//! split, no prefix space), a BPE model whose vocabulary is the 256 byte characters at ids 0..=255
//! and which has no merges (so each byte is one token), the special tokens as added tokens at ids
//! 256..=262 (matched in the text before the bytes, as `ByteTokenizer` matches them), a template
//! post-processor that prepends `<|bos|>` when special tokens are added, and the `ByteLevel`
//! decoder.

use super::tokenizer::ByteTokenizer;
use serde_json::{json, Map, Value};

/// GPT-2's reversible table from bytes to printable characters: printable Latin-1 bytes map to
/// themselves, the other bytes to U+0100 upwards in byte order.
pub fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(c).expect("below U+0200");
    }
    table
}

/// `tokenizer.json` of the byte tokenizer.
pub fn tokenizer_json() -> Value {
    let mut vocab = Map::new();
    for (b, c) in byte_chars().iter().enumerate() {
        vocab.insert(c.to_string(), json!(b));
    }
    let added: Vec<Value> = ByteTokenizer::SPECIALS
        .iter()
        .enumerate()
        .map(|(k, s)| {
            json!({
                "id": 256 + k, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true,
            })
        })
        .collect();
    let bos = ByteTokenizer::SPECIALS[0];
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [ByteTokenizer::BOS], "tokens": [bos]}},
        },
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": [],
        },
    })
}

/// `tokenizer_config.json` of the byte tokenizer: the special tokens, the chat template, and the
/// fast tokenizer class that reads `tokenizer.json`.
pub fn tokenizer_config_json(model_max_length: Option<usize>) -> Value {
    let s = ByteTokenizer::SPECIALS;
    let mut cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": s[0],
        "eos_token": s[1],
        "pad_token": s[2],
        "unk_token": null,
        "additional_special_tokens": s[3..].to_vec(),
        "add_bos_token": true,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "chat_template": ByteTokenizer::CHAT_TEMPLATE,
    });
    if let Some(n) = model_max_length {
        cfg["model_max_length"] = json!(n);
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_bytes(tokenizer_json().to_string().as_bytes()).expect("tokenizer.json loads")
    }

    #[test]
    fn the_table_is_a_bijection_onto_gpt2s_characters() {
        let t = byte_chars();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], 'Ġ'); // byte 32 is GPT-2's famous U+0120
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
    }

    #[test]
    fn encodes_every_string_as_the_byte_tokenizer_does() {
        let tok = load();
        let cases = [
            "",
            "hello world",
            "  two  spaces\tand a tab\n",
            "café naïve über",
            "emoji 🎉👩‍💻 done",
            "中文字符 and 日本語",
            "<|user|>\nhi<|end|>\n<|assistant|>\n",
            "a <|bos|> inside, <|eos|> and <|pad|>, not <|nope|> or <| end|>",
            "\u{0}\u{1}\u{7f} control",
        ];
        for text in cases {
            for add in [false, true] {
                let want = ByteTokenizer.encode(text, add);
                let got = tok.encode(text, add).unwrap().get_ids().to_vec();
                assert_eq!(got, want, "{text:?} (add special: {add})");
                let back = tok.decode(&got, false).unwrap();
                assert_eq!(back, ByteTokenizer.decode(&want, false).unwrap(), "{text:?} decoded");
            }
        }
        // every byte value, alone and in a run
        let all: Vec<u8> = (0..=255).collect();
        let text = String::from_utf8_lossy(&all).into_owned();
        assert_eq!(tok.encode(text.as_str(), false).unwrap().get_ids().to_vec(), ByteTokenizer.encode(&text, false));
    }

    #[test]
    fn special_tokens_sit_at_the_byte_tokenizers_ids() {
        let tok = load();
        for (k, s) in ByteTokenizer::SPECIALS.iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(256 + k as u32), "{s}");
        }
        assert_eq!(tok.get_vocab_size(true), 263);
    }
}
