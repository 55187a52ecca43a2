"""Word lists and regular expressions behind the quality gates (`core/quality.py`).

Kept apart from the rules so each list can be read (and extended) on its own. English patterns
are matched on casefolded text; Chinese ones on the text as it is.
"""

from __future__ import annotations

import re

# ---- questions ---------------------------------------------------------------------------------
# Words that open an English question or request. Condor's task types include imperative
# requests (creation, response format control, role playing, given material processing), so
# imperative verbs count as asking. Matched on the first word of a sentence or clause.
_INTERROGATIVE = """
    what what's whats how how's why which who who's whom whose when where where's whether
    can could would will should shall may might must is isn't are aren't am was wasn't were
    do does doesn't did didn't don't have has hasn't had won't can't couldn't wouldn't
    shouldn't
"""
INTERROGATIVE_WORDS = frozenset(_INTERROGATIVE.split())
_IMPERATIVE = """
    write list explain describe compare give imagine suggest tell help create design plan draft
    compose summarize summarise analyze analyse translate rewrite provide recommend outline
    evaluate assess discuss share make generate calculate compute identify propose develop
    convert format classify categorize act pretend play assume respond reply answer name define
    show find choose pick rank rate review critique argue debate prepare build edit improve fix
    solve estimate predict brainstorm offer advise guide teach walk consider read use put turn
    introduce present interpret extract sort organize organise elaborate clarify illustrate
    demonstrate prove justify construct formulate produce craft compile detail highlight
    break draw sketch map convince persuade role-play roleplay let let's please recount narrate
    continue complete fill reflect recall check verify judge decide select determine
    simulate count express paraphrase condense shorten expand rephrase state mention note
    specify pretend stay keep take talk chat converse greet welcome introduce invent
"""
IMPERATIVE_WORDS = frozenset(_IMPERATIVE.split())
# Asking phrases that may sit anywhere in an English text ("As a new owner, I'd like ...").
ASKING_PHRASES = re.compile(
    r"\b(?:i(?:'d| would) like|i want|i need|i'm looking for|i am looking for|i wonder"
    r"|help me|tell me|show me|give me|can you|could you|would you|will you|please"
    r"|let's|let me know|any (?:tips|advice|ideas|suggestions|recommendations))\b"
)
# Chinese asking markers: question particles and words, and request verbs. Chinese requests
# put the verb anywhere ("关于养猫，请给出三条建议"), so these are matched anywhere in the text.
CHINESE_ASKING = re.compile(
    r"吗|呢|什么|怎么|怎样|如何|为什么|为何|哪|谁|是否|多少|几个|几种|几点|能否|可否|能不能"
    r"|可不可以|是不是|有没有|请|帮我|帮忙|写|描述|解释|介绍|分析|比较|列出|列举|给出|提供|推荐"
    r"|建议|设计|创作|总结|概括|翻译|改写|扮演|假设|想象|说说|谈谈|讲讲|评价|看法|制定|规划|整理"
    r"|生成|编写|撰写|起草|计算|判断|阐述|举例|告诉我"
)

# ---- refusals ------------------------------------------------------------------------------------
# An AI disclaimer or a stated inability to help counts anywhere in an answer. Apologies count
# only when they open the answer ("I'm sorry, ..."): "I'm sorry to hear that" and a role-played
# waiter's "抱歉让您久等了" are empathy, not refusal, and stay.
REFUSAL = re.compile(
    r"(?i)\bas an ai\b|\bi(?:'m| am) (?:just |only )?an ai\b|\bas a language model\b"
    r"|\bi(?:'m| am) (?:unable|not able) to (?:help|assist|provide|answer|fulfil|comply|do"
    r"|create|write|generate|give|offer|share|support)"
    r"|\bi (?:cannot|can ?not|can't|won't be able to) (?:help(?! but)(?! feeling)|assist"
    r"|provide|answer|fulfil|comply|do that|create|write|generate|give|offer|share|support"
    r"|engage|discuss)"
    r"|作为(?:一个|一名)?(?:AI|人工智能|语言模型|AI助手|人工智能助手)"
    r"|我(?:无法|不能|没办法|没有办法)(?:回答|提供|帮助|协助|满足|完成|处理|给出|参与|讨论)"
)
APOLOGY_OPENING = re.compile(
    r"(?i)^\W*(?:(?:i'm|i am) (?:so |very |really )?sorry(?! to hear)(?! for your loss)"
    r"(?! about your)|i apologi[sz]e|my apologies|sorry,|抱歉[，,。！!]|对不起[，,。！!]"
    r"|很抱歉|非常抱歉|对不起，?我|抱歉，?我)"
)

# ---- meta-commentary in rewrites ---------------------------------------------------------
# One leading sentence or line that talks about the rewrite instead of being it. Each
# alternative ends where the real answer would start (a colon, an end of sentence, a newline).
_EN_VERBED = (
    r"(?:rewrit\w*|revis\w*|improv\w*|updat\w*|refin\w*|better|new|corrected|polished|enhanced"
    r"|modified|edited)"
)
_EN_META_SENTENCES = (
    # "Sure!", "Certainly,": the interjection alone (what follows may be the answer itself)
    r"(?:sure|certainly|of course|absolutely|okay|ok|great|alright|got it|understood)\s*[!.,:]",
    # "Thank you for the feedback!", "Thanks for your suggestions."
    r"thank(?:s| you)\b[^\n]{0,120}?\b(?:feedback|suggestions?|comments?|critique|input"
    r"|review)\b[^\n.!:]*[.!:]?",
    # "Here's a rewritten version of your answer that ...:", "Here is the improved answer:"
    r"here(?:'s| is| are)\b[^\n:]{0,80}?\b" + _EN_VERBED + r"\b[^\n:]{0,80}?"
    r"\b(?:answer|response|version|reply)\b[^\n:.]*[:.]?",
    # "I have rewritten the answer to address ...:", "I've incorporated the suggestions."
    r"(?:i(?:'ve| have)|i) (?:rewritten|revised|updated|improved|refined|edited|modified|rewrote"
    r"|incorporated|addressed)\b[^\n:]*?(?::|\.(?=\s|$)|$)",
    # "Based on your feedback, here is ...:"
    r"(?:based on|taking into account|following|considering|in response to) (?:the|your) "
    r"(?:feedback|suggestions?|critique|comments?)[^\n:]*?(?::|\.(?=\s|$)|$)",
    # "The right answers are indeed perfect for this feedback." (SmolLM2): a sentence about
    # the feedback that also names the answer; "Giving feedback to a boss ..." is not one.
    r"(?=[^\n.!?]*\b(?:answers?|responses?|rewrit\w*|revis\w*)\b)[^\n.!?]{0,80}"
    r"\b(?:this|your|the) feedback\b[^\n.!?]{0,80}[.!?:]",
    # "**Improved Answer:**"
    r"(?:\*\*)?(?:rewritten|revised|improved|updated|refined|new|final) "
    r"(?:answer|response|version)(?:\*\*)?\s*[:：](?:\*\*)?",
    # "The answer to the question is:" (SmolLM2's grounded answers, often all there is)
    r"(?:the )?(?:correct |right |final )?answer(?: to (?:the|this|your) question)? is\s*[:：]",
)
_ZH_META_SENTENCES = (
    r"(?:好的|当然|没问题|明白了?|收到)[！!，,。.]",
    r"(?:感谢|谢谢)(?:您|你)?的?(?:反馈|建议|意见|点评)[^\n。！!]*[。！!，,]?",
    r"(?:以下|下面)是(?:我)?(?:改进|修改|重写|优化|完善|更新|修订)(?:后|过)的?(?:回答|答案|版本|内容)[：:。]?",
    r"(?:我)?(?:根据|按照|结合|参考)(?:您|你)?的?(?:反馈|建议|意见|点评)[^\n：:。]*[：:。]?",
    r"(?:改进|修改|重写|优化|修订)(?:后|过)的?(?:回答|答案|版本)[：:]",
    r"(?:这个问题的)?(?:答案|回答)(?:是|为)?[：:]",
)
META_SENTENCE = re.compile(
    r"^\s*(?:" + "|".join(_EN_META_SENTENCES + _ZH_META_SENTENCES) + r")\s*",
    re.IGNORECASE,
)
# Left over after the preamble, these mean the text is still about the feedback, not an answer
# ("Your answer is clear but ...", "I have addressed the weaknesses ...").
META_REFERENCES = re.compile(
    r"(?i)\b(?:your (?:original |previous )?answer|the (?:original|previous) answer|my "
    r"(?:original |previous )?answer|the feedback|your feedback|the weaknesses|the suggestions"
    r"|the critique)\b|(?:你|您)的(?:回答|反馈)|原(?:来的|始)?回答|上述反馈|这些反馈"
)
