# ruff: noqa: E501  (payloads are kept verbatim, long lines and all)
"""Real-world provider error responses and the class each must get.

Each case is one response as the provider sends it: status, headers and body text. The
source of each (a public issue or the provider's docs) is in the comment above it. Bodies
that the source showed as a Python dict repr or inside a client's log line are written
back as the JSON the provider sent; message texts are verbatim. Where a source showed no
headers, the case has none; the few headers added are marked as such.
"""

from __future__ import annotations

import attrs

from oswitch.core.error_class import ErrorClass

C = ErrorClass


@attrs.frozen(kw_only=True)
class Case:
    """One recorded response and what classify() must make of it."""

    id: str
    status: int
    body: str
    expected: ErrorClass
    retry_after: float | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    code: str | None = None
    message_prefix: str | None = None


CORPUS: list[Case] = [
    # ---------------------------------------------------------------- OpenAI
    # https://github.com/ChatGPTNextWeb/NextChat/issues/3123
    Case(
        id="openai-429-insufficient-quota",
        status=429,
        body=r"""{
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }
}""",
        expected=C.QUOTA_EXHAUSTED,
        code="insufficient_quota",
        message_prefix="You exceeded your current quota",
    ),
    # https://github.com/ChatGPTNextWeb/NextChat/issues/1792 (older shape: code null)
    Case(
        id="openai-429-insufficient-quota-code-null",
        status=429,
        body=r"""{
  "error": {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota",
    "param": null,
    "code": null
  }
}""",
        expected=C.QUOTA_EXHAUSTED,
        code="insufficient_quota",
    ),
    # https://github.com/FoundationAgents/MetaGPT/issues/523 (message); shape as in
    # https://github.com/DrShushen/climb/issues/13 (type "tokens", code rate_limit_exceeded)
    Case(
        id="openai-429-tpm-rate-limit-try-again",
        status=429,
        body=r"""{"error":{"message":"Rate limit reached for gpt-4 in organization org-uVqpjtJiKqvVJMVfvpaounIh on tokens per min (TPM): Limit 10000, Used 8554, Requested 3082. Please try again in 9.816s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}""",
        expected=C.RATE_LIMITED,
        retry_after=9.816,
        code="rate_limit_exceeded",
    ),
    # https://github.com/Aider-AI/aider/issues/1880 — the request alone exceeds the TPM budget
    Case(
        id="openai-429-request-too-large-for-tpm",
        status=429,
        body=r"""{"error":{"message":"Request too large for gpt-4o in organization org-2itOgSdqw0DhUYp0QyLhttLL on tokens per min (TPM): Limit 30000, Requested 36278. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}""",
        expected=C.REQUEST_TOO_LARGE,
    ),
    # https://github.com/rahul2002m/ChatPDF/issues/6
    Case(
        id="openai-400-context-length-exceeded",
        status=400,
        body=r"""{"error":{"message":"This model's maximum context length is 4097 tokens. However, your messages resulted in 6988 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}""",
        expected=C.REQUEST_TOO_LARGE,
        code="context_length_exceeded",
    ),
    # https://github.com/chatanywhere/GPT_API_free/issues/62
    Case(
        id="openai-401-invalid-api-key",
        status=401,
        body=r"""{"error":{"message":"Incorrect API key provided: sk-VKMIs***************************************wjh3. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}""",
        expected=C.AUTH_FAILURE,
        code="invalid_api_key",
    ),
    # https://github.com/Chainlit/cookbook/issues/82
    Case(
        id="openai-404-model-not-found",
        status=404,
        body=r"""{"error":{"message":"The model `gpt-4` does not exist or you do not have access to it. Learn more: https://help.openai.com/en/articles/7102672-how-can-i-access-gpt-4.","type":"invalid_request_error","param":null,"code":"model_not_found"}}""",
        expected=C.MODEL_UNAVAILABLE,
        code="model_not_found",
    ),
    # https://github.com/home-assistant/core/issues/120072
    Case(
        id="openai-403-unsupported-country",
        status=403,
        body=r"""{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}""",
        expected=C.REGION_RESTRICTION,
        code="unsupported_country_region_territory",
    ),
    # https://github.com/songquanpeng/one-api/issues/737 (images endpoint)
    Case(
        id="openai-400-content-policy-violation",
        status=400,
        body=r"""{
  "error": {
    "code": "content_policy_violation",
    "message": "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.",
    "param": null,
    "type": "invalid_request_error"
  }
}""",
        expected=C.POLICY_FAILURE,
    ),
    # https://github.com/alan-turing-institute/t0-1/issues/69 (reasoning models)
    Case(
        id="openai-400-invalid-prompt-usage-policy",
        status=400,
        body=r"""{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt: https://platform.openai.com/docs/guides/reasoning#advice-on-prompting","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}""",
        expected=C.POLICY_FAILURE,
    ),
    # https://github.com/waylaidwanderer/node-chatgpt-api/issues/34
    Case(
        id="openai-503-model-overloaded",
        status=503,
        body=r"""{
  "error": {
    "message": "That model is currently overloaded with other requests. You can retry your request, or contact us through our help center at help.openai.com if the error persists. (Please include the request ID 169bee8d  in your message.)",
    "type": "server_error",
    "param": null,
    "code": null
  }
}""",
        expected=C.MODEL_UNAVAILABLE,
    ),
    # ------------------------------------------------------------- Anthropic
    # https://github.com/anthropics/claude-code/issues/35792
    Case(
        id="anthropic-529-overloaded",
        status=529,
        body=r"""{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CZAau32QzxDkriovTaFCB"}""",
        expected=C.MODEL_UNAVAILABLE,
        code="overloaded_error",
        message_prefix="Overloaded",
    ),
    # https://github.com/bhouston/mycoder/issues/62 (body). The retry-after header is
    # added per https://docs.claude.com/en/api/rate-limits (429s carry it); value illustrative.
    Case(
        id="anthropic-429-rate-limit-retry-after",
        status=429,
        headers={"retry-after": "41", "request-id": "req_011CRateLimitExample"},
        body=r"""{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization (d3f27ff7-9afe-4ee2-9645-76ecfc73c2b7) of 40,000 input tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase."}}""",
        expected=C.RATE_LIMITED,
        retry_after=41.0,
        code="rate_limit_error",
    ),
    # https://github.com/FoundationAgents/OpenManus/issues/746 — Anthropic through an
    # OpenAI-compatible layer: code says rate limit, type says invalid request.
    Case(
        id="anthropic-compat-429-rate-limit-code-vs-type",
        status=429,
        body=r"""{"error":{"code":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 20,000 input tokens per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.","type":"invalid_request_error","param":null}}""",
        expected=C.RATE_LIMITED,
    ),
    # https://github.com/earendil-works/pi/issues/102
    Case(
        id="anthropic-400-prompt-too-long",
        status=400,
        body=r"""{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 219898 tokens > 200000 maximum"},"request_id":"req_011CVjxiYzEFcAQC4Fk87zw2"}""",
        expected=C.REQUEST_TOO_LARGE,
    ),
    # https://github.com/docker/docker-agent/issues/569 (also anthropics/claude-code#228)
    Case(
        id="anthropic-400-input-and-max-tokens-exceed-context-limit",
        status=400,
        body=r"""{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 178959 + 64000 > 200000, decrease input length or `max_tokens` and try again"},"request_id":"req_011CUB2XUHWkFnQzxcKBbjpF"}""",
        expected=C.REQUEST_TOO_LARGE,
        message_prefix="input length and `max_tokens` exceed context limit",
    ),
    # https://github.com/anthropics/claude-code/issues/66314
    Case(
        id="anthropic-400-credit-balance-too-low",
        status=400,
        body=r"""{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},"request_id":"req_011CbrFTcXhtiMzr3s6EocF7"}""",
        expected=C.QUOTA_EXHAUSTED,
    ),
    # https://github.com/ChatGPTNextWeb/NextChat/issues/4964 — a bad parameter, not a
    # context overflow: must stay InvalidRequest.
    Case(
        id="anthropic-400-max-tokens-parameter",
        status=400,
        body=r"""{
  "type": "error",
  "error": {
    "type": "invalid_request_error",
    "message": "max_tokens: 10000 > 4096, which is the maximum allowed number of output tokens for claude-3-5-sonnet-20240620"
  }
}""",
        expected=C.INVALID_REQUEST,
        code="invalid_request_error",
    ),
    # https://github.com/ProfSynapse/nexus/issues/17 — its docs link mentions
    # "context-window"; still a plain parameter error.
    Case(
        id="anthropic-400-thinking-budget-parameter",
        status=400,
        body=r"""{"type":"error","error":{"type":"invalid_request_error","message":"`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"},"request_id":"req_011CXs6hk18SX5aBxD3jchRc"}""",
        expected=C.INVALID_REQUEST,
    ),
    # https://github.com/anthropics/claude-code/issues/47468
    Case(
        id="anthropic-500-api-error",
        status=500,
        body=r"""{"type":"error","error":{"type":"api_error","message":"Internal server error"},"request_id":"req_011Ca226V2FyPmavY6LzfnAy"}""",
        expected=C.TRANSIENT_SERVER_FAILURE,
        code="api_error",
    ),
    # https://github.com/anthropics/claude-code/issues/51610
    Case(
        id="anthropic-403-permission-error",
        status=403,
        body=r"""{"type":"error","error":{"type":"permission_error","message":"Permission denied"},"request_id":"req_011CaH53rCYtDAVnwhLQvkuc"}""",
        expected=C.PERMISSION_FAILURE,
        code="permission_error",
    ),
    # https://github.com/mattermost/mattermost-plugin-agents/issues/257
    Case(
        id="anthropic-404-model-not-found",
        status=404,
        body=r"""{"type":"error","error":{"type":"not_found_error","message":"model: claude-3-5-sonnet-20241022 "}}""",
        expected=C.MODEL_UNAVAILABLE,
    ),
    # https://github.com/boldsoftware/exe.dev/issues/8 (via an LLM gateway)
    Case(
        id="anthropic-413-request-too-large",
        status=413,
        body=r"""{
  "error": {
    "type": "request_too_large",
    "message": "Request exceeds the maximum size"
  }
}""",
        expected=C.REQUEST_TOO_LARGE,
    ),
    # ----------------------------------------------------------- Azure OpenAI
    # https://github.com/microsoft/sample-app-aoai-chatGPT/issues/406
    Case(
        id="azure-429-token-rate-retry-after-9s",
        status=429,
        body=r"""{"error":{"code":"429","message":"Requests to the Creates a completion for the chat message Operation under Azure OpenAI API version 2023-03-15-preview have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 9 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}""",
        expected=C.RATE_LIMITED,
        retry_after=9.0,
    ),
    # https://github.com/assafelovic/gpt-researcher/issues/936 — Azure's day-long delay
    Case(
        id="azure-429-retry-after-86400-is-quota",
        status=429,
        body=r"""{"error":{"code":"429","message":"Requests to the Embeddings_Create Operation under Azure OpenAI API version 2024-02-15-preview have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 86400 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}""",
        expected=C.QUOTA_EXHAUSTED,
        retry_after=86400.0,
    ),
    # https://github.com/dyad-sh/dyad/issues/1849 (newer wording). The retry-after-ms and
    # retry-after headers Azure documents are added, with values matching the body's 60 s.
    Case(
        id="azure-429-new-wording-retry-after-ms",
        status=429,
        headers={"Retry-After-Ms": "60000", "Retry-After": "60"},
        body=r"""{"error":{"code":"429","message":"Your requests to gpt-5.1 for gpt-5.1 in East US 2 have exceeded the token rate limit for your current AIServices S0 pricing tier. This request was for ChatCompletions_Create under Azure OpenAI API version 2025-03-01-preview. Please retry after 60 seconds. To increase your default rate limit, visit: https://aka.ms/oai/quotaincrease."}}""",
        expected=C.RATE_LIMITED,
        retry_after=60.0,
    ),
    # https://github.com/openai/openai-dotnet/issues/55
    Case(
        id="azure-400-content-filter",
        status=400,
        body=r"""{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":true,"severity":"high"},"violence":{"filtered":false,"severity":"safe"}}}}}""",
        expected=C.POLICY_FAILURE,
        code="content_filter",
    ),
    # https://github.com/SciSharp/BotSharp/issues/386
    Case(
        id="azure-401-invalid-subscription-key",
        status=401,
        body=r"""{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}""",
        expected=C.AUTH_FAILURE,
    ),
    # https://github.com/chatboxai/chatbox/issues/646
    Case(
        id="azure-404-deployment-not-found",
        status=404,
        body=r"""{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}""",
        expected=C.MODEL_UNAVAILABLE,
        code="DeploymentNotFound",
    ),
    # ---------------------------------------------------------- Gemini / Vertex
    # https://github.com/RooCodeInc/Roo-Code/issues/3883 — per-minute quota + RetryInfo
    Case(
        id="gemini-429-per-minute-quota-retryinfo",
        status=429,
        body=r"""{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
            "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            "quotaDimensions": {
              "location": "global",
              "model": "gemini-2.5-flash"
            },
            "quotaValue": "250000"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
          {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "26s"
      }
    ]
  }
}
""",
        expected=C.RATE_LIMITED,
        retry_after=26.0,
        code="RESOURCE_EXHAUSTED",
    ),
    # https://github.com/diegosouzapw/OmniRoute/issues/9504 — per-day quota; RetryInfo
    # still says 36 s, which the class must not believe.
    Case(
        id="gemini-429-per-day-quota-short-retryinfo",
        status=429,
        body=r"""{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 20, model: gemini-3.6-flash\nPlease retry in 36.429760048s.",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
          {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "quotaDimensions": {
              "location": "global",
              "model": "gemini-3.6-flash"
            },
            "quotaValue": "20"
          }
        ]
      },
      {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "36s"
      }
    ]
  }
}
""",
        expected=C.QUOTA_EXHAUSTED,
        retry_after=36.0,
    ),
    # https://github.com/google-gemini/gemini-cli/issues/8437 — per-minute and per-day
    # quotas violated at once: the per-day one decides.
    Case(
        id="gemini-429-minute-and-day-quotas",
        status=429,
        body=r"""{"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count", "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash-preview-image"}}, {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash-preview-image"}}, {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaDimensions": {"model": "gemini-2.5-flash-preview-image", "location": "global"}}]}, {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}]}}""",
        expected=C.QUOTA_EXHAUSTED,
    ),
    # https://github.com/google-gemini/gemini-cli/issues/2020 — the classic bare 429
    Case(
        id="gemini-429-resource-exhausted-no-details",
        status=429,
        body=r"""{
  "error": {
    "code": 429,
    "message": "Resource has been exhausted (e.g. check quota).",
    "status": "RESOURCE_EXHAUSTED"
  }
}
""",
        expected=C.RATE_LIMITED,
        code="RESOURCE_EXHAUSTED",
    ),
    # https://github.com/gke-labs/gemini-for-kubernetes-development/issues/1215 — only
    # the message says quota; the reporter notes it lasted until midnight.
    Case(
        id="gemini-429-exceeded-quota-message-only",
        status=429,
        body=r"""{
  "error": {
    "code": 429,
    "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. ",
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [
          {
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
          }
        ]
      }
    ]
  }
}
""",
        expected=C.QUOTA_EXHAUSTED,
    ),
    # https://github.com/google-gemini/gemini-cli/issues/10925 — Code Assist: the per-day
    # limit is named in ErrorInfo.metadata.quota_limit.
    Case(
        id="gemini-cloudcode-429-per-day-errorinfo",
        status=429,
        body=r"""{
  "error": {
    "code": 429,
    "message": "Quota exceeded for quota metric 'Gemini 2.5 Pro Requests' and limit 'Gemini 2.5 Pro Requests per day per user per tier' of service 'cloudcode-pa.googleapis.com' for consumer 'project_number:681255809395'.",
    "errors": [
      {
        "message": "Quota exceeded for quota metric 'Gemini 2.5 Pro Requests' and limit 'Gemini 2.5 Pro Requests per day per user per tier' of service 'cloudcode-pa.googleapis.com' for consumer 'project_number:681255809395'.",
        "domain": "global",
        "reason": "rateLimitExceeded"
      }
    ],
    "status": "RESOURCE_EXHAUSTED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RATE_LIMIT_EXCEEDED",
        "domain": "googleapis.com",
        "metadata": {
          "quota_metric": "cloudcode-pa.googleapis.com/gemini_2_5_pro_requests",
          "quota_limit": "Gemini25ProRequestsPerDay"
        }
      }
    ]
  }
}
""",
        expected=C.QUOTA_EXHAUSTED,
        code="RATE_LIMIT_EXCEEDED",
    ),
    # https://github.com/google-gemini/gemini-cli/issues/14831 — Vertex wraps the error in
    # a list.
    Case(
        id="vertex-429-resource-exhausted-list-wrapped",
        status=429,
        body=r"""[{
  "error": {
    "code": 429,
    "message": "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    "errors": [
      {
        "message": "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
        "domain": "global",
        "reason": "rateLimitExceeded"
      }
    ],
    "status": "RESOURCE_EXHAUSTED"
  }
}
]""",
        expected=C.RATE_LIMITED,
        message_prefix="Resource exhausted.",
    ),
    # https://github.com/felixbinder/introspection_self_prediction/issues/66 (message, from
    # the gRPC client); REST shape as Vertex sends it.
    Case(
        id="vertex-429-quota-exceeded-per-minute-metric",
        status=429,
        body=r"""{
  "error": {
    "code": 429,
    "message": "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model with base model: gemini-pro. Please submit a quota increase request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.",
    "status": "RESOURCE_EXHAUSTED"
  }
}
""",
        expected=C.RATE_LIMITED,
    ),
    # https://github.com/cequence-io/openai-scala-client/issues/109 — a bad key as a 400
    Case(
        id="gemini-400-api-key-invalid",
        status=400,
        body=r"""{
  "error": {
    "code": 400,
    "message": "API key not valid. Please pass a valid API key.",
    "status": "INVALID_ARGUMENT",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {
          "service": "generativelanguage.googleapis.com"
        }
      },
      {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": "API key not valid. Please pass a valid API key."
      }
    ]
  }
}
""",
        expected=C.AUTH_FAILURE,
        code="API_KEY_INVALID",
        message_prefix="API key not valid.",
    ),
    # https://github.com/Xeift/Telegram-Discord-Bot/issues/4
    Case(
        id="gemini-400-user-location-not-supported",
        status=400,
        body=r"""{
  "error": {
    "code": 400,
    "message": "User location is not supported for the API use.",
    "status": "FAILED_PRECONDITION"
  }
}
""",
        expected=C.REGION_RESTRICTION,
    ),
    # https://github.com/iBUHub/AIStudioToAPI/issues/109
    Case(
        id="gemini-403-permission-denied",
        status=403,
        body=r"""{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}""",
        expected=C.PERMISSION_FAILURE,
        code="PERMISSION_DENIED",
    ),
    # https://github.com/google-gemini/gemini-cli/issues/10440 (project id masked as there)
    Case(
        id="gemini-cloudcode-403-iam-permission-denied",
        status=403,
        body=r"""[{
  "error": {
    "code": 403,
    "message": "Permission 'cloudaicompanion.companions.generateChat' denied on resource '//cloudaicompanion.googleapis.com/projects/***********/locations/global' (or it may not exist).",
    "errors": [
      {
        "message": "Permission 'cloudaicompanion.companions.generateChat' denied on resource '//cloudaicompanion.googleapis.com/**********' (or it may not exist).",
        "domain": "global",
        "reason": "forbidden"
      }
    ],
    "status": "PERMISSION_DENIED",
    "details": [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "IAM_PERMISSION_DENIED",
        "domain": "cloudaicompanion.googleapis.com",
        "metadata": {
          "resource": "projects/*********",
          "permission": "cloudaicompanion.companions.generateChat"
        }
      }
    ]
  }
}
]""",
        expected=C.PERMISSION_FAILURE,
        code="IAM_PERMISSION_DENIED",
    ),
    # https://github.com/google-gemini/gemini-cli/issues/5191
    Case(
        id="gemini-503-model-overloaded",
        status=503,
        body=r"""{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}""",
        expected=C.MODEL_UNAVAILABLE,
        code="UNAVAILABLE",
    ),
    # https://github.com/continuedev/continue/issues/10639
    Case(
        id="gemini-503-high-demand",
        status=503,
        body=r"""{
  "error": {
    "code": 503,
    "message": "This model is currently experiencing high demand. Spikes in demand are usually temporary. Please try again later.",
    "status": "UNAVAILABLE"
  }
}
""",
        expected=C.MODEL_UNAVAILABLE,
    ),
    # https://github.com/google-gemini/gemini-cli/issues/4118
    Case(
        id="gemini-400-input-token-count-exceeded",
        status=400,
        body=r"""{"error":{"code":400,"message":"The input token count (132478) exceeds the maximum number of tokens allowed (131072).","status":"INVALID_ARGUMENT"}}""",
        expected=C.REQUEST_TOO_LARGE,
    ),
    # https://github.com/wwardaww/gnome-gemini-ai/issues/22
    Case(
        id="gemini-404-model-not-found",
        status=404,
        body=r"""{
  "error": {
    "code": 404,
    "message": "models/gemini-pro is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.",
    "status": "NOT_FOUND"
  }
}
""",
        expected=C.MODEL_UNAVAILABLE,
    ),
    # https://github.com/google-gemini/gemini-cli/issues/3665
    Case(
        id="gemini-500-internal",
        status=500,
        body=r"""{
  "error": {
    "code": 500,
    "message": "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    "status": "INTERNAL"
  }
}
""",
        expected=C.TRANSIENT_SERVER_FAILURE,
    ),
    # ---------------------------------------------------------------- Mistral
    # https://github.com/pydantic/pydantic-ai/issues/1885
    Case(
        id="mistral-429-requests-rate-limit",
        status=429,
        body=r"""{"message":"Requests rate limit exceeded"}""",
        expected=C.RATE_LIMITED,
        message_prefix="Requests rate limit exceeded",
    ),
    # https://github.com/cline/cline/issues/9085
    Case(
        id="mistral-429-rate-limited-1300",
        status=429,
        body=r"""{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300"}""",
        expected=C.RATE_LIMITED,
        code="rate_limited",
    ),
    # ------------------------------------------------------------------- Groq
    # https://github.com/cottongeeks/podscript/issues/20 — 413 for a request over the TPM
    Case(
        id="groq-413-request-too-large-for-tpm",
        status=413,
        body=r"""{"error":{"message":"Request too large for model `llama-3.3-70b-versatile` in organization `org_01j2g5d88hfvjrgw64hnapqk8y` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 10338, please reduce your message size and try again. Visit https://console.groq.com/docs/rate-limits for more information.","type":"tokens","code":"rate_limit_exceeded"}}""",
        expected=C.REQUEST_TOO_LARGE,
        code="rate_limit_exceeded",
    ),
    # https://github.com/mindcraft-bots/mindcraft/pull/188
    Case(
        id="groq-429-tpm-try-again",
        status=429,
        body=r"""{"error":{"message":"Rate limit reached for model `llama3-70b-8192` in organization `[nah]` on tokens per minute (TPM): Limit 6000, Used 5914, Requested 1822. Please try again in 17.359s. Visit https://console.groq.com/docs/rate-limits for more information.","type":"tokens","code":"rate_limit_exceeded"}}""",
        expected=C.RATE_LIMITED,
        retry_after=17.359,
    ),
    # https://github.com/continuedev/continue/issues/10920 — tokens per day: a quota,
    # but the provider's delay still travels with it.
    Case(
        id="groq-429-tokens-per-day",
        status=429,
        body=r"""{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01kjh7p9n8f1qs6nz2bz77vy6b` service tier `on_demand` on tokens per day (TPD): Limit 100000, Used 97050, Requested 3619. Please try again in 9m38.016s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing","type":"tokens","code":"rate_limit_exceeded"}}""",
        expected=C.QUOTA_EXHAUSTED,
        retry_after=578.016,
    ),
    # https://github.com/continuedev/continue/issues/10815 (message); OpenAI-compatible shape
    Case(
        id="groq-404-model-does-not-exist",
        status=404,
        body=r"""{"error":{"message":"The model `llama3.1-70b` does not exist or you do not have access to it.","type":"invalid_request_error","code":"model_not_found"}}""",
        expected=C.MODEL_UNAVAILABLE,
    ),
    # ------------------------------------------------------------- OpenRouter
    # https://github.com/open-assistant-org/open-assistant/issues/80
    Case(
        id="openrouter-402-insufficient-credits",
        status=402,
        body=r"""{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits","code":402,"metadata":{"limit_source":"openrouter_credits","remedy_hint":"Add credits at https://openrouter.ai/settings/credits, or lower max_tokens / prompt size to fit your remaining balance."}}}""",
        expected=C.QUOTA_EXHAUSTED,
    ),
    # https://github.com/QwenLM/qwen-code/issues/73
    Case(
        id="openrouter-402-requires-more-credits",
        status=402,
        body=r"""{"error":{"message":"This request requires more credits, or fewer max_tokens. You requested up to 225702 tokens, but can only afford 92985. To increase, visit https://openrouter.ai/settings/credits and add more credits","code":402}}""",
        expected=C.QUOTA_EXHAUSTED,
    ),
    # https://github.com/OpenRouterTeam/ai-sdk-provider/issues/187 — the upstream's error
    # travels as a JSON string in metadata.raw.
    Case(
        id="openrouter-400-wrapped-gemini-location",
        status=400,
        body=r"""{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"User location is not supported for the API use.\",\n    \"status\": \"FAILED_PRECONDITION\"\n  }\n}\n","provider_name":"Google AI Studio"}}}""",
        expected=C.REGION_RESTRICTION,
        message_prefix="User location is not supported",
    ),
    # Shape per https://openrouter.ai/docs/api/errors (moderation errors carry
    # metadata.reasons and metadata.flagged_input); message text illustrative.
    Case(
        id="openrouter-403-moderation-flagged",
        status=403,
        body=r"""{"error":{"code":403,"message":"openai/gpt-4o requires moderation on OpenAI. Your input was flagged for \"harassment\". No credits were charged.","metadata":{"reasons":["harassment"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}""",
        expected=C.POLICY_FAILURE,
    ),
    # --------------------------------------------------------------- DeepSeek
    # https://github.com/Aider-AI/aider/issues/4851 (body); status 402 per
    # https://github.com/continuedev/continue/issues/9942
    Case(
        id="deepseek-402-insufficient-balance",
        status=402,
        body=r"""{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}""",
        expected=C.QUOTA_EXHAUSTED,
        message_prefix="Insufficient Balance",
    ),
    # ------------------------------------------------------------------- vLLM
    # https://github.com/vllm-project/vllm/issues/3485
    Case(
        id="vllm-404-model-does-not-exist",
        status=404,
        body=r"""{"object":"error","message":"The model `Qwen1.5-14B-Chat-GPTQ-Int8` does not exist.","type":"NotFoundError","param":null,"code":404}""",
        expected=C.MODEL_UNAVAILABLE,
    ),
    # Message from https://github.com/ruipeterpan/specreason/issues/4 (vLLM server log);
    # vLLM's error shape as in vllm-project/vllm#3485.
    Case(
        id="vllm-400-maximum-context-length",
        status=400,
        body=r"""{"object":"error","message":"This model's maximum context length is 8192 tokens. However, you requested 8203 tokens (7691 in the messages, 512 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}""",
        expected=C.REQUEST_TOO_LARGE,
    ),
    # ----------------------------------------------------------------- Ollama
    # https://github.com/ollama/ollama/issues/3876
    Case(
        id="ollama-404-model-not-found",
        status=404,
        body=r"""{"error":"model 'llama3' not found, try pulling it first"}""",
        expected=C.MODEL_UNAVAILABLE,
        message_prefix="model 'llama3' not found",
    ),
    # https://github.com/BerriAI/litellm/issues/25797
    Case(
        id="ollama-500-runner-terminated",
        status=500,
        body=r"""{"error":"llama runner process has terminated: %!w(\u003cnil\u003e)"}""",
        expected=C.TRANSIENT_SERVER_FAILURE,
        message_prefix="llama runner process has terminated",
    ),
    # ---------------------------------------------------------- proxies (HTML)
    # https://github.com/n3d1117/chatgpt-telegram-bot/issues/637
    Case(
        id="cloudflare-502-bad-gateway-html",
        status=502,
        headers={"Content-Type": "text/html"},
        body="<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
        "<center><h1>502 Bad Gateway</h1></center>\n<hr><center>cloudflare</center>\n"
        "</body>\n</html>\n",
        expected=C.TRANSIENT_SERVER_FAILURE,
        message_prefix="502 Bad Gateway",
    ),
    # https://github.com/ClassmateLin/free-chatgpt/issues/2
    Case(
        id="nginx-504-gateway-timeout-html",
        status=504,
        body="<html>\n<head><title>504 Gateway Time-out</title></head>\n<body>\n"
        "<center><h1>504 Gateway Time-out</h1></center>\n<hr><center>nginx</center>\n"
        "</body>\n</html>\n",
        expected=C.TRANSIENT_SERVER_FAILURE,
        message_prefix="504 Gateway Time-out",
    ),
    # https://github.com/MoonshotAI/kimi-cli/issues/1222
    Case(
        id="nginx-413-request-entity-too-large-html",
        status=413,
        body="<html>\n<head><title>413 Request Entity Too Large</title></head>\n<body>\n"
        "<center><h1>413 Request Entity Too Large</h1></center>\n<hr><center>nginx</center>\n"
        "</body>\n</html>\n",
        expected=C.REQUEST_TOO_LARGE,
    ),
    # https://github.com/Mintplex-Labs/anything-llm/issues/1722 (haproxy)
    Case(
        id="haproxy-504-gateway-timeout-html",
        status=504,
        body="<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n"
        "</body></html>\n",
        expected=C.TRANSIENT_SERVER_FAILURE,
        message_prefix="504 Gateway Time-out",
    ),
    # https://console.groq.com/docs/flex-processing: "requests will fail quickly with status
    # 498 and error capacity_exceeded"; the body follows Groq's documented error shape
    # (https://console.groq.com/docs/errors), its message written for this case.
    Case(
        id="groq-498-flex-capacity-exceeded",
        status=498,
        body=r"""{"error":{"message":"Flex tier capacity exceeded. Please try again later.","type":"capacity_exceeded","code":"capacity_exceeded"}}""",
        expected=C.MODEL_UNAVAILABLE,
        code="capacity_exceeded",
    ),
    # The same status with an unstructured body: the status alone says capacity.
    Case(
        id="groq-498-status-only",
        status=498,
        body="capacity exceeded",
        expected=C.MODEL_UNAVAILABLE,
    ),
]
