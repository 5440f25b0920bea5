"""The traffic plane's data path: the OpenAI gateway (``proxy``, ``app``), the per-pool runtime shared with
the ext_proc service (``pool``), model-server scraping (``scrape``), the gateway's own metrics
(``metrics``) and pool discovery from the store (``discovery``)."""
