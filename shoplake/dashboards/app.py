"""shoplake dashboards (Streamlit): Live, Commerce, Ads, Models and Data health.

    shoplake dashboards            (or: streamlit run shoplake/dashboards/app.py)

Reads only gold marts (read-only) and the speed tables; see shoplake/dashboards/data.py.
"""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import polars as pl
import streamlit as st

from shoplake.core.settings import get_settings
from shoplake.dashboards import data, models

st.set_page_config(page_title="shoplake", page_icon=":bar_chart:", layout="wide")
SETTINGS = get_settings()
SRC = data.Sources.from_settings(SETTINGS)
TTL = 5  # seconds: the Live page refreshes about this often


@st.cache_data(ttl=TTL, show_spinner=False)
def cached(name: str, *args):
    return getattr(data, name)(SRC, *args)


def empty(frame: pl.DataFrame, what: str) -> bool:
    if frame.is_empty():
        st.info(f"No {what} yet. `make demo` fills them; see docs/operations.md.")
        return True
    return False


def date_filters(key: str) -> tuple | None:
    bounds = cached("date_bounds")
    if bounds is None:
        st.info(
            "No gold partitions yet: materialize the daily partitions in Dagster (or run `make demo`)."
        )
        return None
    lo, hi = bounds
    picked = st.sidebar.date_input(
        "Date range",
        (max(lo, hi - timedelta(days=13)), hi),
        min_value=lo,
        max_value=hi,
        key=f"dates-{key}",
    )
    start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) else (picked, picked)
    return start, end


def platform_filter(key: str) -> str | None:
    choice = st.sidebar.selectbox("Platform", ["all", "web", "ios", "android"], key=f"pf-{key}")
    return None if choice == "all" else choice


def live_page() -> None:
    st.title("Live")

    @st.fragment(run_every=TTL)
    def body() -> None:
        s = cached("live_summary")
        c = st.columns(6)
        c[0].metric(
            "Events / s", f"{s['events_per_s']:.1f}" if s["events_per_s"] is not None else "-"
        )
        c[1].metric(
            "Active sessions", s["active_sessions"] if s["active_sessions"] is not None else "-"
        )
        c[2].metric(
            "Conversion (1 h)",
            f"{s['conversion_rate']:.2%}" if s["conversion_rate"] is not None else "-",
        )
        c[3].metric(
            "Avg session",
            f"{s['avg_session_seconds']:.0f} s" if s["avg_session_seconds"] is not None else "-",
        )
        c[4].metric(
            "Revenue (1 h)", f"{s['revenue_1h']:,.2f}" if s["revenue_1h"] is not None else "-"
        )
        alerts = cached("recent_alerts", 1)
        c[5].metric("Alerts (1 h)", alerts.height)
        metrics = cached("live_metrics", 30)
        st.subheader("Last 30 minutes, 10-second windows")
        if not empty(metrics, "live metrics"):
            st.line_chart(
                metrics.select(
                    "window_start", "events", "page_views", "add_to_carts", "purchases"
                ).to_pandas(),
                x="window_start",
            )
        left, right = st.columns(2)
        with left:
            st.subheader("Top products (latest 5 minutes)")
            top = cached("live_top_products", "views")
            if not empty(top, "top products"):
                st.bar_chart(top.to_pandas(), x="product_id", y="count", horizontal=True)
        with right:
            st.subheader("Alerts in the last hour")
            if not empty(alerts, "alerts"):
                st.dataframe(
                    alerts.select("window_start", "severity", "rule", "subject", "evidence"),
                    hide_index=True,
                    use_container_width=True,
                )
        if s["newest"] is not None:
            st.caption(f"Newest window: {s['newest']:%Y-%m-%d %H:%M:%S} UTC")

    body()


def commerce_page() -> None:
    st.title("Commerce")
    window = date_filters("commerce")
    if window is None:
        return
    start, end = window
    platform = platform_filter("commerce")
    kpis = cached("daily_kpis", start, end)
    if empty(kpis, "daily KPIs"):
        return
    total = kpis.select(pl.sum("revenue"), pl.sum("n_orders"), pl.sum("n_sessions"))
    c = st.columns(4)
    c[0].metric("Revenue", f"{total['revenue'][0]:,.2f}")
    c[1].metric("Orders", f"{total['n_orders'][0]:,}")
    c[2].metric("Sessions", f"{total['n_sessions'][0]:,}")
    c[3].metric("Conversion (last day)", f"{kpis['conversion_rate'][-1]:.2%}")
    st.subheader("Revenue and visitors by day")
    st.line_chart(kpis.select("kpi_date", "revenue").to_pandas(), x="kpi_date")
    st.bar_chart(
        kpis.select("kpi_date", "new_visitors", "returning_visitors").to_pandas(), x="kpi_date"
    )
    st.subheader("Conversion funnel by device")
    fun = cached("funnel", start, end, platform)
    if not empty(fun, "funnel rows"):
        long = fun.unpivot(index="device_type", variable_name="step", value_name="sessions_at_step")
        st.altair_chart(
            alt.Chart(long.to_pandas())
            .mark_bar()
            .encode(
                x=alt.X(
                    "step:N",
                    sort=["sessions", "product_view", "add_to_cart", "checkout", "purchase"],
                ),
                y="sessions_at_step:Q",
                color="device_type:N",
                xOffset="device_type:N",
            ),
            use_container_width=True,
        )
    left, right = st.columns(2)
    with left:
        st.subheader("Top products")
        st.dataframe(
            cached("top_products", start, end, 20), hide_index=True, use_container_width=True
        )
    with right:
        st.subheader("Categories")
        cats = cached("categories", start, end)
        if not empty(cats, "categories"):
            st.bar_chart(cats.to_pandas(), x="top_category", y="revenue")
    left, right = st.columns(2)
    with left:
        st.subheader("RFM segments")
        rfm = cached("rfm_segments")
        if not empty(rfm, "RFM segments"):
            st.bar_chart(rfm.to_pandas(), x="rfm_segment", y="customers")
    with right:
        st.subheader("Cohort retention")
        coh = cached("cohorts")
        if not empty(coh, "cohorts"):
            st.altair_chart(
                alt.Chart(coh.with_columns(pl.col("cohort_week").cast(pl.String)).to_pandas())
                .mark_rect()
                .encode(
                    x="week_number:O",
                    y="cohort_week:O",
                    color=alt.Color("retention_rate:Q", scale=alt.Scale(scheme="blues")),
                    tooltip=["cohort_week", "week_number", "retention_rate", "cohort_size"],
                ),
                use_container_width=True,
            )


def ads_page() -> None:
    st.title("Ads")
    window = date_filters("ads")
    if window is None:
        return
    start, end = window
    platform = platform_filter("ads")
    daily = cached("daily_ctr", start, end)
    if empty(daily, "ad metrics"):
        return
    c = st.columns(3)
    c[0].metric("Impressions", f"{daily['n_impressions'].sum():,}")
    c[1].metric("Clicks", f"{daily['n_clicks'].sum():,}")
    imp = daily["n_impressions"].sum()
    c[2].metric("CTR", f"{daily['n_clicks'].sum() / imp:.2%}" if imp else "-")
    st.subheader("CTR by day")
    st.line_chart(daily.select("ctr_date", "ctr").to_pandas(), x="ctr_date")
    st.subheader("CTR by hour of day")
    st.bar_chart(cached("hourly_ctr", start, end).to_pandas(), x="ctr_hour", y="ctr")
    left, right = st.columns(2)
    with left:
        st.subheader("Device performance")
        dev = cached("device_performance", start, end, platform)
        if not empty(dev, "device rows"):
            st.bar_chart(dev.to_pandas(), x="device_type", y="ctr", color="platform")
    with right:
        st.subheader("Banner position")
        st.bar_chart(
            cached("banner_positions", start, end).to_pandas(), x="banner_position", y="ctr"
        )
    st.subheader("Site / app category")
    inv = cached("inventory_categories", start, end)
    if not empty(inv, "ad inventory rows"):
        st.bar_chart(inv.to_pandas(), x="category", y="ctr", color="inventory_type")


def forecast_chart(actual: pl.DataFrame, forecast: pl.DataFrame) -> alt.LayerChart:
    """Actual revenue, the forecast, and its 80 % and 95 % intervals as nested bands."""
    fc = forecast.rename({"forecast_date": "day"}).to_pandas()
    base = alt.Chart(fc).encode(x=alt.X("day:T", title=None))
    band95 = base.mark_area(opacity=0.2).encode(y=alt.Y("lo95:Q", title="revenue"), y2="hi95:Q")
    band80 = base.mark_area(opacity=0.35).encode(y="lo80:Q", y2="hi80:Q")
    line = base.mark_line(strokeDash=[4, 3]).encode(y="yhat:Q")
    seen = alt.Chart(actual.to_pandas()).mark_line(point=True).encode(x="day:T", y="revenue:Q")
    return alt.layer(band95, band80, line, seen)


def models_page() -> None:
    st.title("Models")
    st.subheader("Revenue forecast vs actual")
    actual, forecast = models.forecast_vs_actual(SRC)
    if not empty(forecast, "revenue forecast (it needs a few weeks of daily revenue)"):
        served = forecast["model"][0]
        st.caption(f"served model: {served}; bands: 80 % and 95 % intervals")
        st.altair_chart(forecast_chart(actual, forecast), use_container_width=True)
    st.subheader("Backtest errors per model")
    errors = models.backtest(SRC)
    if not empty(errors, "backtest results"):
        chart = (
            alt.Chart(errors.drop_nulls("value").to_pandas())
            .mark_bar()
            .encode(x=alt.X("model:N", title=None), y="value:Q", color="model:N", column="metric:N")
        )
        st.altair_chart(chart)
    left, right = st.columns(2)
    with left:
        day, scores, flagged = models.anomalies(SRC)
        st.subheader(f"Anomalous visitors{f' on {day}' if day else ''}")
        if not empty(scores, "anomaly scores"):
            st.metric("Flagged", flagged.height)
            histogram = alt.Chart(scores.to_pandas()).mark_bar()
            histogram = histogram.encode(
                x=alt.X("anomaly_score:Q", bin=alt.Bin(maxbins=30), title="anomaly score"),
                y=alt.Y("count():Q", title="visitors"),
                color=alt.Color("is_anomaly:N", title="flagged"),
            )
            st.altair_chart(histogram, use_container_width=True)
            st.dataframe(flagged, hide_index=True, use_container_width=True)
    with right:
        day, profile = models.segments(SRC)
        st.subheader(f"Customer segments{f' on {day}' if day else ''}")
        if not empty(profile, "customer segments"):
            sizes = alt.Chart(profile.to_pandas()).mark_bar()
            sizes = sizes.encode(x="customers:Q", y=alt.Y("segment_label:N", title=None))
            st.altair_chart(sizes, use_container_width=True)
            st.dataframe(profile, hide_index=True, use_container_width=True)


def health_page() -> None:
    st.title("Data health")
    st.subheader("Latest partition per table")
    parts = data.latest_partitions(SRC)
    if not empty(parts, "partitions"):
        st.dataframe(parts, hide_index=True, use_container_width=True)
    left, right = st.columns(2)
    with left:
        st.subheader("Quarantined rows and dead letters")
        rej = data.rejects_by_day(SRC)
        if not empty(rej, "quarantine or DLQ counts"):
            st.bar_chart(rej.to_pandas(), x="day", y="rows", color="kind")
    with right:
        st.subheader("Speed layer lag")
        try:
            lag = data.stream_lag(SRC, SETTINGS.bootstrap_servers)
        except Exception as exc:  # Kafka down: the page still shows the rest
            st.warning(f"Kafka not reachable for the lag ({exc})")
        else:
            if not empty(lag, "stream progress (is `shoplake stream` running?)"):
                st.bar_chart(lag.to_pandas(), x="partition", y="lag")
    st.subheader("Asset checks (latest evaluation)")
    try:
        checks = data.check_results()
    except Exception as exc:  # no DAGSTER_HOME or an unreachable instance: say so, keep the page
        st.warning(f"Dagster instance not readable ({exc}); set DAGSTER_HOME as `make demo` does.")
    else:
        if not empty(checks, "check results"):
            failed = checks.filter(~pl.col("passed"))
            st.metric("Failed checks", failed.height, delta=None)
            st.dataframe(checks.sort("passed", "asset"), hide_index=True, use_container_width=True)
    st.subheader("Notifications")
    notes = data.notifications(SRC)
    if not empty(notes, "notifications"):
        st.dataframe(notes, hide_index=True, use_container_width=True)


def guarded(page):
    def run() -> None:
        try:
            page()
        except data.WarehouseBusy as exc:
            st.warning(str(exc))

    run.__name__ = page.__name__
    return run


nav = st.navigation(
    [
        st.Page(
            guarded(live_page), title="Live", icon=":material/bolt:", url_path="live", default=True
        ),
        st.Page(
            guarded(commerce_page),
            title="Commerce",
            icon=":material/shopping_cart:",
            url_path="commerce",
        ),
        st.Page(guarded(ads_page), title="Ads", icon=":material/ads_click:", url_path="ads"),
        st.Page(
            guarded(models_page),
            title="Models",
            icon=":material/model_training:",
            url_path="models",
        ),
        st.Page(
            guarded(health_page),
            title="Data health",
            icon=":material/monitor_heart:",
            url_path="health",
        ),
    ]
)
nav.run()
