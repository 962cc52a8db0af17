"""Fakes at the network seam: real servers on 127.0.0.1 speaking the providers' wire formats.

``FakeOpenAI`` (Chat Completions) and ``FakeAnthropic`` (Messages) are scripted per test with
``enqueue(reply_...)`` and record every request they receive.
"""
