from transformers import AutoTokenizer

from bar_model.tokenizer import END, render_prompt, train_tokenizer

SAMPLES = [
    "Compute 7+5*3. 5*3=15. 7+15=22. Answer: 22",
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "héllo wörld — naïve café 🙂 ∑",
    "  leading and trailing spaces  \n\ttabs\n",
    "",
]


def test_round_trip_after_save_and_load(tmp_path):
    tokenizer = train_tokenizer(SAMPLES[:2] * 50, vocab_size=320)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in SAMPLES:
        ids = loaded(text, add_special_tokens=False)["input_ids"]
        assert loaded.decode(ids) == text


def test_digits_are_single_tokens():
    tokenizer = train_tokenizer(["12345 67890 " * 100], vocab_size=300)
    tokens = tokenizer.tokenize("2024")
    assert [t for t in tokens if t.strip("Ġ")] == ["2", "0", "2", "4"]


def test_chat_template_prompt_is_prefix_and_ends_with_eos():
    tokenizer = train_tokenizer(SAMPLES * 10, vocab_size=320)
    prompt = render_prompt(tokenizer, "Compute 1+1.")
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Compute 1+1."}, {"role": "assistant", "content": "Answer: 2"}],
        tokenize=False,
    )
    assert full.startswith(prompt)
    assert full[len(prompt) :].startswith("Answer: 2" + END)
    assert tokenizer.eos_token == END
    assert tokenizer.convert_tokens_to_ids(END) == tokenizer.eos_token_id
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
