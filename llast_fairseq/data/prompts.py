"""LLaST prompts: instruction wording per task and language pair, spliced around the audio.

The default template is the Llama-2 chat format used by LLaST::

    [INST] <audio>\nPlease translate the French sentence into English. [/INST]

``"chat"`` renders the same user message with the tokenizer's own chat template (Qwen2, Llama-3,
...). Any other template is a literal string holding ``<audio>`` and either ``{instruction}`` or
both language names, ``{src}`` and ``{tgt}`` (a transcription prompt names the source language
twice): ``"<audio>{src} to {tgt}:"`` costs 4 tokens where the Llama-2 prompt costs 20, for small
LLMs trained from scratch.
"""
from typing import List, Tuple

AUDIO_PLACEHOLDER = "<audio>"

TEMPLATES = {
    "llama2": "[INST] <audio>\n{instruction} [/INST]",
}

INSTRUCTIONS = {
    "st": "Please translate the {src} sentence into {tgt}.",
    "asr": "Please transcribe the {src} sentence into {src}.",
}

LANGUAGE_NAMES = {
    "ar": "Arabic", "ca": "Catalan", "cmn": "Chinese", "cy": "Welsh", "de": "German", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fr": "French", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "lv": "Latvian", "mn": "Mongolian", "nl": "Dutch",
    "pt": "Portuguese", "ru": "Russian", "sl": "Slovenian", "sv": "Swedish", "ta": "Tamil",
    "tr": "Turkish", "zh": "Chinese",
}


def language_base(code: str) -> str:
    """The language part of a code, lowercased: FLEURS-style ``fr_fr`` and CoVoST-style ``zh-CN``
    are ``fr`` and ``zh``."""
    return code.replace("-", "_").split("_")[0].lower()


def output_language(task: str, src_lang: str, tgt_lang: str) -> str:
    """The language a task writes: a transcript is in the source language, a translation in the target."""
    return src_lang if task == "asr" else tgt_lang


def language_name(code: str) -> str:
    """English name of an ISO 639-1 code as the prompt says it (``fr`` -> ``French``, ``zh-CN`` ->
    ``Chinese``)."""
    base = language_base(code)
    if base not in LANGUAGE_NAMES:
        raise KeyError(
            f"unknown language code {code!r}; known: {', '.join(sorted(LANGUAGE_NAMES))}"
        )
    return LANGUAGE_NAMES[base]


class PromptBuilder:
    """Token ids before and after the audio for each (task, src_lang, tgt_lang).

    Results are cached: a manifest has few distinct language pairs.
    """

    def __init__(self, tokenizer, template: str = "llama2"):
        self.tokenizer = tokenizer
        self.template = TEMPLATES.get(template, template)
        names_task = "{instruction}" in self.template or (
            "{src}" in self.template and "{tgt}" in self.template)
        if self.template != "chat" and (AUDIO_PLACEHOLDER not in self.template or not names_task):
            raise ValueError(
                f"prompt template {template!r} must be one of {sorted(TEMPLATES) + ['chat']} "
                f"or a string holding {AUDIO_PLACEHOLDER!r} and either '{{instruction}}' or both "
                "'{src}' and '{tgt}'"
            )
        self._cache = {}

    def text(self, task: str, src_lang: str, tgt_lang: str) -> str:
        """The prompt as text, with the audio placeholder where the audio goes."""
        names = {"src": language_name(src_lang), "tgt": language_name(output_language(task, src_lang, tgt_lang))}
        instruction = INSTRUCTIONS[task].format(**names)
        if self.template == "chat":
            message = [{"role": "user", "content": f"{AUDIO_PLACEHOLDER}\n{instruction}"}]
            return self.tokenizer.apply_chat_template(
                message, tokenize=False, add_generation_prompt=True
            )
        return self.template.format(instruction=instruction, **names)

    def ids(self, task: str, src_lang: str, tgt_lang: str) -> Tuple[List[int], List[int]]:
        """``(before, after)`` token ids; ``before`` starts with BOS where the LLM uses one."""
        key = (task, src_lang, tgt_lang)
        if key not in self._cache:
            before, after = self.text(task, src_lang, tgt_lang).split(AUDIO_PLACEHOLDER)
            tok = self.tokenizer
            self._cache[key] = (self._with_bos(tok(before, add_special_tokens=False)["input_ids"]),
                                tok(after, add_special_tokens=False)["input_ids"])
        return self._cache[key]

    def ids_with_text(self, task: str, src_lang: str, tgt_lang: str, text: str) -> List[int]:
        """The prompt's ids with ``text`` where the audio goes, tokenized as one string (text
        pretraining, and the cascade's text translation step)."""
        before, after = self.text(task, src_lang, tgt_lang).split(AUDIO_PLACEHOLDER)
        return self._with_bos(self.tokenizer(before + text + after, add_special_tokens=False)["input_ids"])

    def _with_bos(self, ids: List[int]) -> List[int]:
        """BOS first for plain templates (a chat template writes its own)."""
        bos = self.tokenizer.bos_token_id
        if self.template != "chat" and bos is not None and bos != self.tokenizer.eos_token_id:
            return [bos] + ids
        return ids
