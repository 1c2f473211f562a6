"""Prop firms' published account rules as guard presets (docs/rules.md#the-account-guard).

Firms change their rules, often and without notice, and what is published about them is
scattered over help-center articles and third-party summaries that disagree. So a preset is
not an authority: each carries the firm's page to confirm it against (`source_url`), the
pages its numbers were actually read from (`read_from`), the day they were read
(`checked_on`) and what is uncertain (`note`). The admin shows the date and asks a person
to confirm the numbers before a guard relies on them. A number that could not be found is
None, never a guess; a preset whose drawdown could not be found is not here at all.

Pure: data and one function that builds `GuardRules` from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from copier.domain.guard import DrawdownModel, GuardRules

D = Decimal
CHECKED_ON = dt.date(2026, 12, 2)
CHICAGO = "America/Chicago"
NEW_YORK = "America/New_York"

EOD = DrawdownModel.EOD_TRAILING
INTRADAY = DrawdownModel.INTRADAY_TRAILING


@dataclass(frozen=True, slots=True)
class GuardPreset:
    """One firm plan's account rules, with where they came from and when.

    The money fields mean what they mean on `GuardRules`; `trail_stop` None means no stop
    was found, so the guard keeps trailing (the safe side: its line is never below the
    firm's). `read_from` lists the pages the numbers were read from, official or not;
    `note` says which numbers rest on third-party pages or disagree between sources."""

    key: str
    firm: str
    plan: str
    starting_balance: Decimal
    drawdown: Decimal
    model: DrawdownModel
    source_url: str
    read_from: tuple[str, ...]
    note: str
    trail_stop: Decimal | None = None
    daily_loss: Decimal | None = None
    daily_loss_hard: bool = True
    weekly_loss: Decimal | None = None
    profit_target: Decimal | None = None
    target_flatten: bool = False
    max_contracts: int | None = None
    flat_by: dt.time | None = None
    session_reset: dt.time = dt.time(17, 0)
    tz: str = CHICAGO
    checked_on: dt.date = CHECKED_ON

    def rules(self, *, buffer: Decimal, warn: Decimal) -> GuardRules:
        """The guard profile: the firm's numbers and the person's buffer and warning."""
        return GuardRules(
            starting_balance=self.starting_balance, drawdown=self.drawdown, model=self.model,
            trail_stop=self.trail_stop, buffer=buffer, warn=warn, daily_loss=self.daily_loss,
            daily_loss_hard=self.daily_loss_hard, weekly_loss=self.weekly_loss,
            profit_target=self.profit_target, target_flatten=self.target_flatten,
            max_contracts=self.max_contracts, flat_by=self.flat_by,
            session_reset=self.session_reset, tz=self.tz)


# --- Topstep: Trading Combine ----------------------------------------------------------------

_TOPSTEP_MLL = "https://help.topstep.com/en/articles/8284204-what-is-the-maximum-loss-limit"
_TOPSTEP_READ = (
    _TOPSTEP_MLL,
    "https://intercom.help/topstep-llc/en/articles/8284206-when-and-what-products-can-i-trade",
    "https://help.futures.topstep.com/hc/en-us/articles/8808125387923-Prohibited-Conduct",
    "https://help.topstep.com/en/articles/9772296-topstepx-fixed-personal-daily-loss-limit",
    "https://tradingfunder.com/topstep-trading-combine-accounts-unique-rules/",
    "https://www.proptradingvibes.com/blog/topstep-rules-overview",
)
_TOPSTEP_NOTE = (
    "Maximum Loss Limit (EOD trailing, stops at the starting balance, enforced intraday), "
    "the 3:10 PM CT flat time and the soft Daily Loss Limit are from Topstep's help center. "
    "The per-size MLL, profit target, DLL and max contracts are from third-party summaries. "
    "TopstepX accounts created since 2024-08-25 have no Daily Loss Limit, and a newer Topstep "
    "article is reported to make it optional: clear the daily loss if your account has none. "
    "One third-party page calls the Combine's MLL intraday trailing; Topstep's own page says "
    "end of day.")


def _topstep(size: int, drawdown: int, daily: int, target: int, contracts: int) -> GuardPreset:
    return GuardPreset(
        key=f"topstep-{size // 1000}k", firm="Topstep", plan=f"Trading Combine {size // 1000}K",
        starting_balance=D(size), drawdown=D(drawdown), model=EOD, trail_stop=D(0),
        daily_loss=D(daily), daily_loss_hard=False, profit_target=D(target),
        max_contracts=contracts, flat_by=dt.time(15, 10), session_reset=dt.time(17, 0),
        tz=CHICAGO, source_url=_TOPSTEP_MLL, read_from=_TOPSTEP_READ, note=_TOPSTEP_NOTE)


# --- Apex Trader Funding: the evaluations sold since 2026-03-01 ("4.0") ----------------------

_APEX_EOD_URL = ("https://apextraderfunding.com/help-center/eod-trailing-drawdown-accounts/"
                 "eod-evaluations/")
_APEX_INTRADAY_URL = ("https://apextraderfunding.com/help-center/intraday-trailing-drawdown-"
                      "accounts/intraday-trailing-drawdown-explained/")
_APEX_DATASET = ("https://github.com/kburrus64-max/prop-firm-rules/blob/"
                 "12d6b90513ac1f18789726e8ee8208f2c9c8d2cc/data/firms.yaml")
_APEX_COMMON = (
    "https://puravidaedge.com/blog/how-to-pass-apex-trader-funding.html",
    "https://damnpropfirms.com/?p=12440",
    "https://www.propfirmescape.com/blog/apex-trader-funding-evaluation-rules-2026",
    "https://support.atf.com/hc/en-us/articles/10403533495835-What-Are-the-Rules-for-"
    "Evaluations-Master-Course",
)
_APEX_NOTE = (
    "Apex's own pages were not in the stored copies: the drawdowns{dll} and the 6:00 PM ET "
    "day are from an MIT dataset that cites them (checked 2026-10-04). Sources disagree on "
    "the 50K drawdown ($2,000 there, $2,500 on a May 2026 page): confirm. The $3,000 50K "
    "target is third-party; the 100K/150K targets and the max contracts were not found. "
    "The 4:59 PM ET flat time is from Apex's older help center (pre-2026 evaluations). "
    "Where the evaluation's trail stops depends on the data vendor (Rithmic: at the "
    "target, Tradovate: never), so the guard keeps trailing; Performance Accounts stop at "
    "starting balance + $100.")


def _apex(kind: str, size: int, drawdown: int, daily: int | None,
          target: int | None) -> GuardPreset:
    eod = kind == "eod"
    url = _APEX_EOD_URL if eod else _APEX_INTRADAY_URL
    return GuardPreset(
        key=f"apex-{kind}-{size // 1000}k", firm="Apex Trader Funding",
        plan=f"{'EOD' if eod else 'Intraday'} Trailing Evaluation {size // 1000}K",
        starting_balance=D(size), drawdown=D(drawdown), model=EOD if eod else INTRADAY,
        daily_loss=None if daily is None else D(daily), daily_loss_hard=False,
        profit_target=None if target is None else D(target),
        flat_by=dt.time(16, 59), session_reset=dt.time(18, 0), tz=NEW_YORK,
        source_url=url, read_from=(_APEX_DATASET, *_APEX_COMMON),
        note=_APEX_NOTE.format(dll=", the Daily Loss Limit (a pause, not a fail)" if eod
                               else " (no Daily Loss Limit on this account)"))


# --- Take Profit Trader: Test (evaluation) ----------------------------------------------------

_TPT_URL = "https://takeprofittrader.com/"
_TPT_READ = (
    "https://fundedprogramfinder.com/take-profit-trader-review",
    "https://fundedwiki.com/take-profit-trader",
    "https://proptradingvibes.com/blog/takeprofittrader-rules-overview",
    "https://puravidaedge.com/blog/how-to-pass-take-profit-trader.html",
    "https://www.proptradingvibes.com/blog/takeprofittrader-risk-management",
)
_TPT_NOTE = (
    "Only third-party pages were found; confirm every number on Take Profit Trader's site. "
    "Test accounts trail the end-of-day balance and stop at the starting balance; the "
    "funded PRO account trails intraday (not a preset: its drawdown was reported as $2,000, "
    "$2,500 and $3,000 on a 50K). No Daily Loss Limit since January 2025. Max contracts: "
    "6/12/15 on one page, 6/8/10 on another. Flat time: 5:00 PM ET on most pages, 4:10 PM "
    "ET on one; the earlier is used.")


def _tpt(size: int, drawdown: int, target: int, contracts: int) -> GuardPreset:
    return GuardPreset(
        key=f"tpt-test-{size // 1000}k", firm="Take Profit Trader", plan=f"Test {size // 1000}K",
        starting_balance=D(size), drawdown=D(drawdown), model=EOD, trail_stop=D(0),
        profit_target=D(target), max_contracts=contracts, flat_by=dt.time(16, 10),
        session_reset=dt.time(18, 0), tz=NEW_YORK, source_url=_TPT_URL, read_from=_TPT_READ,
        note=_TPT_NOTE)


# --- Tradeify: Growth evaluation ---------------------------------------------------------------

_TRADEIFY_DLL = "https://intercom.help/tradeify-test/en/articles/11807991-rules-daily-loss-limit"
_TRADEIFY_READ = (
    _TRADEIFY_DLL,
    "https://intercom.help/tradeify-test/en/articles/11807978-essential-trading-rules-overview",
    "https://tradeify.co/post/instant-funding-vs-evaluation-prop-firm-challenges",
    "https://tradingfunder.com/?p=30095",
    "https://blog.traderspost.io/article/how-to-get-funded-with-tradeify",
)
_TRADEIFY_NOTE = (
    "From Tradeify's help center and blog: EOD trailing, enforced intraday, stopping at "
    "starting balance + $100 (the floor locks once the balance clears starting balance + "
    "drawdown + $100); the Daily Loss Limit is soft (the day is paused) and \"not a hard "
    "stop\": losses can run past it. The drawdowns ($2,000/$3,500/$5,000) match the DLL "
    "page's raised DLL; max contracts and the 4:59 PM ET flat time are third-party and "
    "older. The evaluation's profit target was not found.")


def _tradeify(size: int, drawdown: int, daily: int, contracts: int) -> GuardPreset:
    return GuardPreset(
        key=f"tradeify-growth-{size // 1000}k", firm="Tradeify", plan=f"Growth {size // 1000}K",
        starting_balance=D(size), drawdown=D(drawdown), model=EOD, trail_stop=D(100),
        daily_loss=D(daily), daily_loss_hard=False, max_contracts=contracts,
        flat_by=dt.time(16, 59), session_reset=dt.time(18, 0), tz=NEW_YORK,
        source_url=_TRADEIFY_DLL, read_from=_TRADEIFY_READ, note=_TRADEIFY_NOTE)


# --- MyFundedFutures: Core evaluation ---------------------------------------------------------

_MFFU_URL = ("https://help.myfundedfutures.com/en/articles/11994562-consistency-rule-at-"
             "myfunded-futures-core-scale-and-pro-plans")
_MFFU_READ = (
    _MFFU_URL,
    "https://runvigil.app/my-funded-futures/what-happens-drawdown",
    "https://tradercore.io/blog/myfundedfutures-review-rules-payouts",
    "https://puravidaedge.com/blog/how-to-pass-myfundedfutures",
    "https://www.proptradingvibes.com/blog/myfundedfutures-strategy",
)
_MFFU_NOTE = (
    "The $3,000 target is from MyFundedFutures' help center; the $2,000 EOD trailing "
    "drawdown and the absence of a Daily Loss Limit are third-party. Where the trail stops, "
    "max contracts, the flat time and the session start were not found (the session and "
    "time zone are the copier's defaults, 17:00 Chicago).")

PRESETS: tuple[GuardPreset, ...] = (
    _topstep(50_000, 2000, 1000, 3000, 5),
    _topstep(100_000, 3000, 2000, 6000, 10),
    _topstep(150_000, 4500, 3000, 9000, 15),
    _apex("eod", 50_000, 2000, 1000, 3000),
    _apex("eod", 100_000, 3000, 1500, None),
    _apex("eod", 150_000, 4000, 2000, None),
    _apex("intraday", 50_000, 2000, None, 3000),
    _apex("intraday", 100_000, 3000, None, None),
    _apex("intraday", 150_000, 4000, None, None),
    _tpt(50_000, 2000, 3000, 6),
    _tpt(100_000, 3000, 6000, 12),
    _tpt(150_000, 4500, 9000, 15),
    _tradeify(50_000, 2000, 1250, 5),
    _tradeify(100_000, 3500, 2500, 10),
    _tradeify(150_000, 5000, 3750, 15),
    GuardPreset(
        key="mffu-core-50k", firm="MyFundedFutures", plan="Core 50K",
        starting_balance=D(50_000), drawdown=D(2000), model=EOD, profit_target=D(3000),
        source_url=_MFFU_URL, read_from=_MFFU_READ, note=_MFFU_NOTE),
)

BY_KEY: dict[str, GuardPreset] = {p.key: p for p in PRESETS}

# Firms the issue asked for that have no preset, and why: a person enters their numbers.
MISSING: dict[str, str] = {
    "Bulenox": ("no page found gave the 50K/100K/150K drawdowns (only a 50K $3,000 target "
                "and a 150K $5,000 drawdown on third-party pages, neither saying which of "
                "the two options, trailing without a daily loss limit or EOD with one)"),
}


def preset_rules(key: str, buffer: Decimal, warn: Decimal) -> GuardRules:
    """The guard profile for the preset `key` with the person's buffer and warning.

    Raises ValueError naming the known keys when `key` is not one, and whatever
    `GuardRules` raises for a buffer or warning that makes no sense for the preset (a
    buffer as large as the drawdown)."""
    try:
        preset = BY_KEY[key]
    except KeyError:
        raise ValueError(f"{key!r} is not a preset; the presets are: "
                         f"{', '.join(BY_KEY)}") from None
    return preset.rules(buffer=buffer, warn=warn)
