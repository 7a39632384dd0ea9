//! Prompts to `input_ids`, as schema/README.md says for any tokenizer:
//! encode without special tokens, keep at most L − 2 ids, `bos_id` before,
//! `eos_id` after, `pad_id` up to L.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::manifest::Text;

/// A tokenizer file larger than this is not a tokenizer (CLIP's is ~2 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub struct Prompter {
    tokenizer: Tokenizer,
    max_length: usize,
    bos: i64,
    eos: i64,
    pad: i64,
}

impl Prompter {
    /// Loads the tokenizer and checks the special ids against its vocabulary.
    /// The error is a message for the bundle's tokenizer file.
    pub fn load(path: &Path, text: &Text) -> Result<Prompter, String> {
        let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        if len > MAX_TOKENIZER_BYTES {
            return Err(format!("too large for a tokenizer ({len} bytes)"));
        }
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| format!("not a tokenizer pie can load (Hugging Face tokenizers JSON): {e}"))?;
        // The contract pads and truncates by itself; settings in the file would interfere.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
        let vocab = tokenizer.get_vocab_size(true) as i64;
        for (what, id) in [("bos_id", text.bos_id), ("eos_id", text.eos_id), ("pad_id", text.pad_id)] {
            if !(0..vocab).contains(&id) {
                return Err(format!("text.{what} {id} is outside the tokenizer's vocabulary of {vocab}"));
            }
        }
        if text.max_length < 3 {
            return Err(format!("text.max_length {} is below 3", text.max_length));
        }
        Ok(Prompter {
            tokenizer,
            max_length: text.max_length as usize,
            bos: text.bos_id,
            eos: text.eos_id,
            pad: text.pad_id,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The L ids of `prompt`, and whether it was cut to fit.
    pub fn ids(&self, prompt: &str) -> Result<(Vec<i64>, bool), String> {
        self.ids_padded(prompt, self.pad)
    }

    /// As [`Prompter::ids`], padded with `pad` (sdxl's second encoder pads with its own id).
    pub fn ids_padded(&self, prompt: &str, pad: i64) -> Result<(Vec<i64>, bool), String> {
        let enc = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| format!("cannot tokenize the prompt {prompt:?}: {e}"))?;
        let raw = enc.get_ids();
        let keep = raw.len().min(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend(raw[..keep].iter().map(|&i| i64::from(i)));
        ids.push(self.eos);
        ids.resize(self.max_length, pad);
        Ok((ids, keep < raw.len()))
    }
}
