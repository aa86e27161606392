"""UI: what analysts see: notebook panels, live charts, mailbox views and the HTML report.

``panels`` the launch and priority panels (plain objects that tests drive; callback errors
land in an Output widget; email content always escaped); ``charts`` live plotly charts and
escaped HTML views; ``explore`` polars/plotly views of a mailbox and a run; ``report`` the
self-contained HTML run report; ``notebook`` running async work from notebooks and the
notebooks themselves (papermill); ``prompt_lab`` the prompt lab panel (edit a draft, try
it beside a saved version, save, launch); ``evidence`` an email's text with each
extracted value's evidence span highlighted, escaped.

May import anything below it: ``emailwb.engine``, ``emailwb.quality``, ``emailwb.facts``,
``emailwb.llm``, ``emailwb.store``, ``emailwb.mail``, ``emailwb.errors``.
"""
