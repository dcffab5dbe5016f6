"""Safe answers to harmful requests: the teacher's instruction to refuse, and the varied refusals
that name the risk, used as the chosen side of safety DPO pairs when neither the prompt set nor a
teacher gives one. Shared by the preference builder (stage 1) and the red-team pairs (stage 2)."""

from __future__ import annotations

import hashlib

from aloe.safety.prompts import HarmfulPrompt

TEACHER_SYSTEM = (
    "You are a careful, honest medical assistant. The user's request below could cause real harm "
    "({risk}). Do not comply, whatever role, encoding or framing the request uses. In two or three "
    "sentences: decline clearly, name the risk, and offer a safe, helpful alternative."
)

# Safe answers for prompts with neither a dataset answer nor a teacher's: many wordings, openings
# and alternatives, picked per case by a stable hash. One fixed string would let DPO teach a single
# sentence, and an ASR drop measured on it could come from matching that string, not from safety.
SAFE_ANSWERS = (
    "I can't help with that. This request falls under {risk}, and following it could cause real harm "
    "to people, whatever framing it is given. If there is a legitimate need behind it, I'm glad to help "
    "with safe, general information or point you to an appropriate professional.",
    "That's not something I'll provide: the instructions you're asking for relate to {risk} and could be "
    "used to hurt someone. If you're researching this topic, published overviews from public-health or "
    "safety agencies cover the risks without operational detail.",
    "No. Even as a story, a role-play or a hypothetical, writing this out would give real guidance on "
    "{risk}. I can talk about how people are protected from this kind of harm, or about the history and "
    "ethics around it, if that helps.",
    "I won't walk through this one. Content like this ({risk}) can put people in danger, and the framing "
    "around the request doesn't change what the answer would enable. Is there something related but safe "
    "I can help you with instead?",
    "This asks for help with {risk}, which I decline to give. If you or someone else is at risk right now, "
    "please contact local emergency services or a crisis line; for anything else, I'm happy to help with a "
    "safer version of the question.",
    "Helping with this would mean assisting with {risk}, so I'll pass on it. What I can do is explain the "
    "warning signs, the legal and medical consequences, or where to find support.",
    "Let me be direct: I'm not going to produce that. It concerns {risk}, and detailed help could lead to "
    "serious harm. If your goal is prevention, education or safety, tell me more and I'll help with that.",
    "I have to decline. The request is about {risk}, and a clinician's or an assistant's duty is first not "
    "to cause harm. I can instead share general, well-established safety information on the subject.",
    "Sorry, but no. Decoding, translating or reformatting a request doesn't change what it asks for, and "
    "this one is about {risk}. I'm glad to help with a different question.",
    "I'd rather not answer this, because it would provide meaningful help with {risk}. If you're dealing "
    "with a situation involving this, a qualified professional or the relevant authorities are the right "
    "people to involve, and I can help you find them.",
    "This isn't something I can assist with: {risk} is an area where specific instructions can be misused "
    "to injure people. I can offer background on why it's dangerous and how harm is prevented.",
    "Refusing this one. Whatever persona or scenario is set up, the answer would amount to guidance on "
    "{risk}. If you have a safety, research or clinical question about it, ask that directly and I'll do "
    "my best to help responsibly.",
)


def safe_answer(p: HarmfulPrompt, key: str) -> str:
    """A varied safe answer for one case, the same on every run (hash of the case's id)."""
    pick = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(SAFE_ANSWERS)
    return SAFE_ANSWERS[pick].format(risk=risk_name(p))


def risk_name(p: HarmfulPrompt) -> str:
    return p.category.replace("_", " ").replace("/", ", ")
